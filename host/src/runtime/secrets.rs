//! Secret task variables: sealed (ChaCha20-Poly1305) before a task is
//! stored, opened only to hand them to that task's own attempts.
//!
//! Owns the key (32 random bytes in a 0600 file in the data dir, made on
//! first use) and the sealed form, `enc:v1:<base64 of nonce ‖ ciphertext>`.
//! A task in memory, in the store and in every version holds only sealed
//! values; the API shows a placeholder (`model::task::SECRET_SHOWN`), and the
//! sandbox redacts the values from what an attempt reports.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "enc:v1:";

/// Seals and opens secret values with this host's key, and signs links.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    /// For signed media links: derived from the key, never the key itself.
    link_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The key in `path`, made (0600) when there is none.
    pub fn open_or_create(path: &Path) -> std::io::Result<SecretBox> {
        let key = match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(bytes) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: a secret key is 32 bytes, this file has {}",
                        path.display(),
                        bytes.len()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_private(path, &key)?;
                key.to_vec()
            }
            Err(e) => return Err(e),
        };
        let link_key = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(b"ward media links v1\0");
            h.update(&key);
            h.finalize().into()
        };
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            link_key,
        })
    }

    /// The signature of a link to media `id` valid until `expires` (unix
    /// seconds): hex HMAC-SHA256 of both.
    pub fn sign_link(&self, id: &str, expires: u64) -> String {
        use hmac::Mac;
        hex::encode(self.link_mac(id, expires).finalize().into_bytes())
    }

    /// Whether `signature` is this host's for `id` until `expires`
    /// (compared in constant time; the expiry is the caller's to check).
    pub fn link_signed(&self, id: &str, expires: u64, signature: &str) -> bool {
        use hmac::Mac;
        match hex::decode(signature) {
            Ok(bytes) => self.link_mac(id, expires).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn link_mac(&self, id: &str, expires: u64) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.link_key)
            .expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// Whether `value` is in the sealed form.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("ChaCha20-Poly1305 encrypts any message of this size");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
        )
    }

    /// The plain value; an error for a value this key did not seal.
    pub fn open(&self, sealed: &str) -> Result<String, String> {
        let encoded = sealed.strip_prefix(PREFIX).ok_or("not a sealed secret")?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|e| format!("a sealed secret that is not base64: {e}"))?;
        if bytes.len() < 12 {
            return Err("a sealed secret too short to hold its nonce".into());
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| "a secret this host's key did not seal (was the key file replaced?)")?;
        String::from_utf8(plain).map_err(|_| "a secret that is not UTF-8".to_string())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let sb = SecretBox::open_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = sb.seal("hunter2");
        assert!(SecretBox::is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_ne!(sealed, sb.seal("hunter2"), "a fresh nonce each time");
        assert_eq!(sb.open(&sealed).unwrap(), "hunter2");
        // The same file again: the same key.
        let again = SecretBox::open_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "hunter2");
        // Another key, or a tampered value: refused.
        let other = SecretBox::open_or_create(&dir.path().join("other.key")).unwrap();
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.replace_range(sealed.len() - 2.., "AA");
        assert!(sb.open(&tampered).is_err());
        assert!(sb.open("plain").is_err());
    }

    #[test]
    fn a_link_is_signed_for_its_object_and_expiry_only() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::open_or_create(&dir.path().join("k")).unwrap();
        let sig = sb.sign_link("m1", 1_900_000_000);
        assert!(sb.link_signed("m1", 1_900_000_000, &sig));
        assert!(!sb.link_signed("m2", 1_900_000_000, &sig));
        assert!(!sb.link_signed("m1", 1_900_000_001, &sig));
        assert!(!sb.link_signed("m1", 1_900_000_000, "zz"));
        let other = SecretBox::open_or_create(&dir.path().join("k2")).unwrap();
        assert!(!other.link_signed("m1", 1_900_000_000, &sig));
    }
}
