//! Tokens from an environment variable or a file. Errors name the variable or file, never the value.

use std::path::PathBuf;

use async_trait::async_trait;
use secrecy::SecretString;

use capsule_core::integration::TokenSource;
use capsule_core::ports::TokenProvider;
use capsule_core::{Result, SyncError};

/// Reads the token from an environment variable at each call (so a rotated token is picked up).
pub struct EnvToken {
    pub var: String,
}

#[async_trait]
impl TokenProvider for EnvToken {
    async fn token(&self) -> Result<SecretString> {
        match std::env::var(&self.var) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
            Ok(_) => Err(SyncError::Credentials(format!("environment variable {} is empty", self.var))),
            Err(_) => Err(SyncError::Credentials(format!(
                "environment variable {} is not set (it should hold the Capsule API token)",
                self.var
            ))),
        }
    }
}

/// Reads the token from a file at each call.
pub struct FileToken {
    pub path: PathBuf,
}

#[async_trait]
impl TokenProvider for FileToken {
    async fn token(&self) -> Result<SecretString> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| SyncError::Credentials(format!("cannot read the token file {}: {e}", self.path.display())))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(SyncError::Credentials(format!("token file {} is empty", self.path.display())));
        }
        Ok(SecretString::from(token.to_string()))
    }
}

/// The local provider for a token source; Secrets Manager needs the AWS backend.
pub fn local_token_provider(source: &TokenSource) -> Result<Box<dyn TokenProvider>> {
    match source {
        TokenSource::Env { var } => Ok(Box::new(EnvToken { var: var.clone() })),
        TokenSource::File { path } => Ok(Box::new(FileToken { path: path.clone() })),
        TokenSource::SecretsManager { secret_id } => Err(SyncError::Config(format!(
            "token source secretsmanager:{secret_id} needs the AWS backend; locally use env:VAR or file:PATH"
        ))),
    }
}
