//! Certificates a test makes for itself with the `openssl` command (installed by
//! `.ci/run` when missing): a CA, a server certificate for 127.0.0.1, a client one.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) struct Certificates {
    pub(crate) dir: PathBuf,
}

impl Certificates {
    pub(crate) fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "scoped-cache-tls-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let certificates = Self { dir };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        certificates.openssl(&[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
            &["-subj", "/CN=scoped-cache test CA"],
        ]);
        std::fs::write(
            certificates.dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            certificates.dir.join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for name in ["server", "client"] {
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            certificates.openssl(&[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]);
            certificates.openssl(&[
                &[
                    "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key",
                ],
                &[
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            ]);
        }
        certificates
    }

    fn openssl(&self, args: &[&[&str]]) {
        let status = Command::new("openssl")
            .args(args.concat())
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed (.ci/run installs it)");
        assert!(status.success(), "openssl {:?}", args.concat());
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub(crate) fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(Path::new(&self.dir).join(name)).unwrap()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
