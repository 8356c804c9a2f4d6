//! Local adapters of the ports: a directory for output, a JSON state file, tokens from an
//! environment variable or a file. The embedded default: no AWS at all.

mod credentials;
mod files;
mod modes;
mod state_file;

pub use credentials::{EnvToken, FileToken, local_token_provider};
pub use files::LocalSink;
pub use modes::FileModes;
pub use state_file::StateFile;
