//! Media: blobs an attempt stores with `host.put-media`, each with a stable URL.
//!
//! Owns the media folder (through `cap-std`, so a guest-supplied name can
//! never reach outside it), the naming rules and the media quotas. Files are
//! named `{id}-{name}`; the URL is either the file's path (`ward run`) or a
//! prefix plus the id (the HTTP API's `GET /media/{id}`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::model::report::MediaInfo;
use crate::sandbox::limits::{Quotas, bytes_display, shorten};

/// How a stored object's URL is made.
#[derive(Debug, Clone)]
pub enum MediaUrls {
    /// The stored file's path on this machine.
    FilePath,
    /// `prefix` followed by the object's id, e.g. `http://host/api/v1/media/`.
    Prefix(String),
}

/// The folder media are written to; shared by all attempts.
pub struct MediaStore {
    dir: cap_std::fs::Dir,
    root: PathBuf,
    urls: MediaUrls,
}

impl MediaStore {
    /// Opens (creating it if needed) the media folder at `root`.
    pub fn open(root: &Path, urls: MediaUrls) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
        Ok(MediaStore { dir, root, urls })
    }

    /// The folder's absolute path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file name an object is stored under.
    pub fn file_name(id: &str, name: &str) -> String {
        format!("{id}-{name}")
    }

    /// Opens a stored object for reading.
    pub fn open_object(&self, id: &str, name: &str) -> std::io::Result<cap_std::fs::File> {
        self.dir.open(Self::file_name(id, name))
    }

    fn url(&self, id: &str, file: &str) -> String {
        match &self.urls {
            MediaUrls::FilePath => self.root.join(file).display().to_string(),
            MediaUrls::Prefix(p) => format!("{p}{id}"),
        }
    }

    fn write(&self, file: &str, data: &[u8]) -> std::io::Result<()> {
        let mut f = self.dir.create(file)?;
        f.write_all(data)?;
        // Acknowledged media must survive a crash.
        f.sync_data()
    }
}

/// Checks a guest-supplied media name: a plain file name.
pub fn check_media_name(name: &str) -> Result<(), String> {
    const MAX: usize = 200;
    if name.is_empty() || name.len() > MAX {
        return Err(format!(
            "media name must be 1-{MAX} bytes, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return Err(format!(
            "media name {:?} must not start with a dot",
            shorten(name, 64)
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '\0') || c.is_control())
    {
        return Err(format!(
            "media name {:?} has {c:?}; it must be a plain file name",
            shorten(name, 64)
        ));
    }
    Ok(())
}

/// Checks a content type: `type/subtype` with optional parameters, printable ASCII.
pub fn check_content_type(ct: &str) -> Result<(), String> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let essence = ct.split(';').next().unwrap_or("");
    let valid = ct.len() <= 255
        && ct.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .trim()
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "content type {:?} is not a MIME type like image/png",
            shorten(ct, 64)
        ))
    }
}

/// One attempt's media.
pub struct Media {
    store: Arc<MediaStore>,
    items: Vec<MediaInfo>,
    total: u64,
    max_each: u64,
    max_total: u64,
}

impl Media {
    pub fn new(store: Arc<MediaStore>, quotas: &Quotas) -> Self {
        Media {
            store,
            items: Vec::new(),
            total: 0,
            max_each: quotas.media_object_bytes,
            max_total: quotas.media_total_bytes,
        }
    }

    /// Validates and stores one object.
    pub fn put(
        &mut self,
        name: &str,
        content_type: &str,
        data: &[u8],
    ) -> Result<MediaInfo, String> {
        check_media_name(name)?;
        check_content_type(content_type)?;
        let size = data.len() as u64;
        if size > self.max_each {
            return Err(format!(
                "media {name:?} is {}, over the {} per-object quota",
                bytes_display(size),
                bytes_display(self.max_each)
            ));
        }
        if self.total + size > self.max_total {
            return Err(format!(
                "media {name:?} would bring this attempt's media to {}, over the {} quota",
                bytes_display(self.total + size),
                bytes_display(self.max_total)
            ));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let file = MediaStore::file_name(&id, name);
        self.store.write(&file, data).map_err(|e| {
            tracing::error!(error = %e, "storing media failed");
            format!("storing media {name:?} failed on the host")
        })?;
        let info = MediaInfo {
            url: self.store.url(&id, &file),
            id,
            name: name.to_string(),
            content_type: content_type.to_string(),
            size,
            sha256: hex::encode(Sha256::digest(data)),
        };
        self.total += size;
        self.items.push(info.clone());
        Ok(info)
    }

    pub fn into_items(self) -> Vec<MediaInfo> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain_file_names() {
        assert!(check_media_name("report.csv").is_ok());
        for bad in ["", "../x", "a/b", "a\\b", ".hidden", "..", "a\nb", "a\0b"] {
            assert!(check_media_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_media_name(&"a".repeat(201)).is_err());
    }

    #[test]
    fn content_types_must_be_mime_types() {
        assert!(check_content_type("image/png").is_ok());
        assert!(check_content_type("text/csv; charset=utf-8").is_ok());
        for bad in ["", "png", "image/", "/png", "image/png\n", "imäge/png"] {
            assert!(check_content_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn objects_are_stored_hashed_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MediaStore::open(dir.path(), MediaUrls::FilePath).unwrap());
        let quotas = Quotas {
            media_object_bytes: 8,
            media_total_bytes: 12,
            ..Quotas::default()
        };
        let mut m = Media::new(store, &quotas);
        let info = m.put("a.txt", "text/plain", b"hello").unwrap();
        assert_eq!(std::fs::read(&info.url).unwrap(), b"hello");
        assert_eq!(
            info.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(
            m.put("b", "text/plain", b"123456789")
                .unwrap_err()
                .contains("per-object")
        );
        assert!(
            m.put("c", "text/plain", b"12345678")
                .unwrap_err()
                .contains("quota")
        );
        assert_eq!(m.into_items().len(), 1);
    }
}
