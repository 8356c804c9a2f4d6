//! The local backend: a data directory holding `state.json` and `output/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use capsule_shared::capsule::{CapsuleClient, ClientOptions};
use capsule_shared::engine::Deps;
use capsule_shared::integration::Integration;
use capsule_shared::local::{LocalSink, StateFile, local_token_provider};
use capsule_shared::ports::StateStore;

pub struct LocalBackend {
    pub data_dir: PathBuf,
    pub state: StateFile,
    pub sink: LocalSink,
}

impl LocalBackend {
    pub fn open(data_dir: &Path) -> LocalBackend {
        LocalBackend {
            data_dir: data_dir.to_path_buf(),
            state: StateFile::new(data_dir),
            sink: LocalSink::new(data_dir.join("output")),
        }
    }

    pub fn deps(&self) -> Deps<'_> {
        Deps { state: &self.state, sink: &self.sink }
    }

    pub async fn integration(&self, name: &str) -> anyhow::Result<Integration> {
        self.state.get_integration(name).await?.with_context(|| {
            format!(
                "no integration named `{name}` in {} (create one with `capsule-sync integrations create`)",
                self.data_dir.display()
            )
        })
    }
}

/// A Capsule client for an integration, with its token read from its token source.
pub async fn client_for(integration: &Integration) -> anyhow::Result<CapsuleClient> {
    let token = local_token_provider(&integration.token)?.token().await?;
    Ok(CapsuleClient::new(&integration.api_base_url, token, ClientOptions::default())?)
}
