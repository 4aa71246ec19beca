//! The operators' shared secret: what the admin routes and the `x-cache-explain` header
//! are checked against. A leaf, so the request pipeline and the admin routes both use it
//! without importing each other.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::BuildError;

/// The shortest admin token [`AdminToken::new`] accepts, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The longest admin secret accepted; a longer credential presented is refused unread.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// The shared secret operators present as `Authorization: Bearer <token>` to the
/// [admin router](crate::admin::router).
///
/// Only the SHA-256 digest of the secret is kept. `Debug` prints `AdminToken { .. }`. See
/// the [admin module docs](crate::admin) for an example.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Takes the admin secret, for example from an environment variable. Use a random one,
    /// such as the output of `openssl rand -hex 32`.
    ///
    /// # Errors
    ///
    /// - [`BuildError::WeakAdminToken`] when the secret is shorter than
    ///   [`MIN_TOKEN_BYTES`] (16) bytes.
    /// - [`BuildError::InvalidAdminToken`] when it is longer than [`MAX_TOKEN_BYTES`]
    ///   (1024).
    /// - [`BuildError::InvalidAdminToken`] when it holds anything other than visible ASCII
    ///   (a space, a control character such as a trailing newline read from a file, or a
    ///   non-ASCII character). A client could not send it in an `Authorization` header
    ///   as written.
    pub fn new(secret: impl Into<String>) -> Result<Self, BuildError> {
        let secret = secret.into();
        if secret.len() < MIN_TOKEN_BYTES {
            return Err(BuildError::WeakAdminToken {
                len: secret.len(),
                min: MIN_TOKEN_BYTES,
            });
        }
        if secret.len() > MAX_TOKEN_BYTES {
            return Err(BuildError::InvalidAdminToken {
                reason: "it must be at most 1024 bytes",
            });
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BuildError::InvalidAdminToken {
                reason: "it must be visible ASCII, without spaces or line breaks",
            });
        }
        Ok(Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this token, in time that reveals nothing about the secret:
    /// hashing makes both sides 32 bytes, and they are compared in constant time.
    pub(crate) fn verify(&self, presented: &[u8]) -> bool {
        // No secret is this long (`new` refuses them): refused without hashing a header
        // a client made as large as the server lets it.
        if presented.len() > MAX_TOKEN_BYTES {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken").finish_non_exhaustive()
    }
}
