//! Tokens and keys from PyJWT, a widely used non-Rust JWT library, installed on first use.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub(crate) struct Minted {
    pub(crate) jwks: HashMap<String, Value>,
    pub(crate) tokens: HashMap<String, String>,
}

impl Minted {
    pub(crate) fn jwk(&self, id: &str) -> Value {
        self.jwks[id].clone()
    }

    pub(crate) fn token(&self, id: &str) -> &str {
        &self.tokens[id]
    }
}

/// Makes sure `python3` can import `jwt` and `cryptography`, installing them from PyPI
/// if needed: the test setup owns its tools.
fn ensure_pyjwt() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import jwt, cryptography"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if importable() {
            return;
        }
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "pyjwt>=2.8",
                "cryptography",
            ])
            .status()
            .expect("python3 with pip is needed for the interop tests");
        assert!(
            status.success() && importable(),
            "installing pyjwt and cryptography failed"
        );
    });
}

/// Runs `support/mint.py` with `spec` (see that file) and returns what it minted.
pub(crate) fn mint(spec: Value) -> Minted {
    ensure_pyjwt();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/mint.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "mint.py failed");
    serde_json::from_slice(&output.stdout).expect("mint.py prints JSON")
}
