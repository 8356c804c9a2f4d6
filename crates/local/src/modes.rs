//! Permissions of what the local backend writes. CRM data, run logs and the state file are
//! private to the operator by default (files 0600, directories 0700), whatever the umask; an
//! operator who lets a loader's group read the output widens them (`--file-mode 640 --dir-mode
//! 750`). The umask can still only remove bits. The state file is always 0600.

use std::path::Path;

use capsule_core::{Result, SyncError};

/// Unix permission bits for files and directories the local backend creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileModes {
    pub file: u32,
    pub dir: u32,
}

impl Default for FileModes {
    fn default() -> FileModes {
        FileModes { file: 0o600, dir: 0o700 }
    }
}

impl FileModes {
    /// Modes from octal text (`600`, `0640`); the error names the setting.
    pub fn parse(file: &str, dir: &str) -> Result<FileModes> {
        let octal = |what: &str, text: &str| {
            u32::from_str_radix(text.trim().trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| SyncError::Config(format!("{what} `{text}` is not an octal mode like 600 or 0640")))
        };
        let modes = FileModes { file: octal("file mode", file)?, dir: octal("directory mode", dir)? };
        if modes.file & 0o600 != 0o600 || modes.dir & 0o700 != 0o700 {
            return Err(SyncError::Config(format!(
                "file mode {:o} / directory mode {:o} must let the owner read and write (and enter directories)",
                modes.file, modes.dir
            )));
        }
        Ok(modes)
    }

    /// Creates `dir` and its missing parents with the directory mode.
    pub fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, self.dir);
        builder.create(dir)
    }

    /// Creates (or truncates) a file for writing with the file mode.
    pub(crate) async fn create_file(&self, path: &Path) -> std::io::Result<tokio::fs::File> {
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(self.file);
        options.open(path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal_and_keep_the_owner_in() {
        assert_eq!(FileModes::parse("600", "700").unwrap(), FileModes::default());
        assert_eq!(FileModes::parse("0640", "0o750").unwrap(), FileModes { file: 0o640, dir: 0o750 });
        assert!(FileModes::parse("rw", "700").unwrap_err().to_string().contains("file mode `rw`"));
        assert!(FileModes::parse("1777", "700").is_err());
        assert!(FileModes::parse("400", "700").unwrap_err().to_string().contains("owner"));
        assert!(FileModes::parse("600", "600").is_err(), "a directory the owner cannot enter");
    }
}
