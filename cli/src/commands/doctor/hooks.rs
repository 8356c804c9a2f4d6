//! `doctor`'s REST hook checks: the stack's hook-receiver has its public URL, and each
//! integration that subscribed sends its hooks to that URL.

use capsule_core::integration::Integration;

use super::Finding;
use super::checks::{Doctor, wrong};

impl Doctor {
    /// The receiver's Function URL, if it has one (a finding either way).
    pub(super) async fn hook_receiver_url(&mut self) -> Option<String> {
        let function = self.function("hook-receiver").await?;
        match self.aws.lambda.get_function_url_config().function_name(&function.name).send().await {
            Ok(config) if config.auth_type().as_str() == "NONE" => {
                let url = config.function_url().to_string();
                self.findings.push(Finding::Fine(format!("{}'s URL {url}", function.name)));
                Some(url)
            }
            Ok(config) => {
                self.findings.push(wrong(
                    format!("{}'s URL requires {} signing, which Capsule cannot do", function.name, config.auth_type().as_str()),
                    "deploy the stack again from template.yaml: the URL is public and each delivery proves itself by its secret",
                ));
                None
            }
            Err(e) => {
                self.findings.push(wrong(
                    format!("{} has no URL: {}", function.name, aws_sdk_dynamodb::error::DisplayErrorContext(&e)),
                    "deploy the stack again from template.yaml (sam deploy): it gives the function its URL",
                ));
                None
            }
        }
    }

    /// An integration's hooks go to this stack's receiver.
    pub(super) fn integration_hooks(&mut self, integration: &Integration, receiver: Option<&str>) {
        let (Some(settings), Some(receiver)) = (&integration.hooks, receiver) else { return };
        let name = &integration.name;
        if settings.receiver.trim_end_matches('/') == receiver.trim_end_matches('/') {
            let events = settings.events.len();
            self.findings
                .push(Finding::Fine(format!("integration {name}: {events} REST hook events to this stack's receiver")));
        } else {
            self.findings.push(wrong(
                format!("integration {name}: its REST hooks go to {}, not this stack's receiver", settings.receiver),
                format!("capsule-sync --backend aws hooks subscribe {name} --receiver {receiver}"),
            ));
        }
    }
}
