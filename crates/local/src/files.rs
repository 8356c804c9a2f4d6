//! Output to a local directory with the same key layout as S3. A part is written to
//! `<key>.<pid>-<n>.partial`, fsynced and renamed into place on finish: a key is either complete or absent.
//! Files and directories get the sink's [`FileModes`] (private by default).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::FileModes;
use capsule_core::ports::{ObjectSink, ObjectUpload};
use capsule_core::{Result, SyncError};

/// Uploads started by this process (names their partial files).
static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A directory acting as an object store.
#[derive(Debug, Clone)]
pub struct LocalSink {
    root: PathBuf,
    modes: FileModes,
}

impl LocalSink {
    /// A sink writing private files (0600 in 0700 directories), rooted at `root`, made absolute (warehouse kits and Redshift manifests name files
    /// by their full path, readable from any working directory).
    pub fn new(root: impl Into<PathBuf>) -> LocalSink {
        let root: PathBuf = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalSink { root, modes: FileModes::default() }
    }

    pub fn with_modes(self, modes: FileModes) -> LocalSink {
        LocalSink { modes, ..self }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.split('/').any(|seg| seg == ".." || seg == "." || seg.is_empty()) {
            return Err(SyncError::Internal(format!("object key `{key}` is not a clean relative path")));
        }
        Ok(self.root.join(key))
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> SyncError {
    SyncError::Output(format!("{what} {}: {e}", path.display()))
}

#[async_trait]
impl ObjectSink for LocalSink {
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectUpload>> {
        let target = self.path(key)?;
        if let Some(dir) = target.parent() {
            self.modes.create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        }
        // Unique per upload: two writers of one key (the table runs of a sync each writing the
        // warehouse kits) must not share a partial file; the last rename wins, whole.
        let unique = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let partial = target.with_file_name(format!("{name}.{}-{unique}.partial", std::process::id()));
        let file = self.modes.create_file(&partial).await.map_err(|e| io_err("creating", &partial, e))?;
        Ok(Box::new(LocalUpload { file, partial, target }))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let mut upload = self.begin(key).await?;
        upload.write(body).await?;
        upload.finish().await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path, e)),
        }
    }

    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path, e)),
        };
        file.seek(std::io::SeekFrom::Start(range.start)).await.map_err(|e| io_err("reading", &path, e))?;
        let mut body = Vec::with_capacity(range.end.saturating_sub(range.start) as usize);
        file.take(range.end.saturating_sub(range.start))
            .read_to_end(&mut body)
            .await
            .map_err(|e| io_err("reading", &path, e))?;
        Ok(Some(Bytes::from(body)))
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<()> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &dir, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.root.join(prefix);
        let dir =
            if prefix.ends_with('/') || dir.is_dir() { dir } else { dir.parent().unwrap_or(&self.root).to_path_buf() };
        let mut keys = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&d).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("listing", &d, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| io_err("listing", &d, e))? {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix) && !key.ends_with(".partial") {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("deleting", &path, e)),
        }
    }

    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

struct LocalUpload {
    file: tokio::fs::File,
    partial: PathBuf,
    target: PathBuf,
}

#[async_trait]
impl ObjectUpload for LocalUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.file.write_all(&chunk).await.map_err(|e| io_err("writing", &self.partial, e))
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        self.file.flush().await.map_err(|e| io_err("flushing", &self.partial, e))?;
        self.file.sync_all().await.map_err(|e| io_err("syncing", &self.partial, e))?;
        tokio::fs::rename(&self.partial, &self.target).await.map_err(|e| io_err("publishing", &self.target, e))
    }

    async fn abort(self: Box<Self>) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.partial).await;
    }
}
