//! Server secrets (the API secret, the signed-token key): from config/environment, else a file
//! in the data dir, generated on first start with mode 0600.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use streamgate_auth::{random_urlsafe, Secret};

/// File name of the generated API secret inside the data dir.
pub const API_SECRET_FILE: &str = "api_secret";
/// File name of the generated signing key for signed tokens inside the data dir.
pub const JWT_SECRET_FILE: &str = "jwt_secret";
/// Random bytes in a generated API secret (256 bits).
const GENERATED_SECRET_BYTES: usize = 32;

/// Where the secret came from, for the start-up log line.
#[derive(Debug)]
pub enum SecretSource {
    /// Config file or environment.
    Configured,
    /// Read from an existing file.
    File(PathBuf),
    /// Generated now and written to the file.
    Generated(PathBuf),
}

/// A secret and where it came from: `configured` if set, else the data dir's `file`, generated
/// on first use.
pub fn resolve(
    configured: &str,
    data_dir: &Path,
    file: &str,
) -> std::io::Result<(Secret, SecretSource)> {
    if !configured.is_empty() {
        return Ok((
            Secret::from_string(configured.to_owned()),
            SecretSource::Configured,
        ));
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok((
                Secret::from_string(text.trim().to_owned()),
                SecretSource::File(path),
            ))
        }
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is empty; delete it to generate a new secret",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = random_urlsafe(GENERATED_SECRET_BYTES).map_err(std::io::Error::other)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok((Secret::from_string(secret), SecretSource::Generated(path)))
}
