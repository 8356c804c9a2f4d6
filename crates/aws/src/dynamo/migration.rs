//! Integrations registered before the registry (`INTEGRATIONS` items) existed: found once by a
//! scan and indexed, so every later listing is one query.

use aws_sdk_dynamodb::error::DisplayErrorContext;

use capsule_core::Result;
use capsule_core::integration::Integration;
use capsule_core::observe::Event;

use super::*;

impl DynamoState {
    /// Integrations written before the registry partition existed: found by one scan, and
    /// registered so later listings are queries (a role that may not write the registry — the
    /// orchestrator's — leaves that to the next `capsule-sync integrations list`).
    pub(super) async fn list_and_index_legacy_integrations(&self) -> Result<Vec<Integration>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("sk = :sk")
            .expression_attribute_values(":sk", s("INTEGRATION"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.map_err(|e| db_err("Scan", e))?.items() {
                out.push(from_item::<Integration>(item)?);
            }
        }
        for integration in &out {
            let put = self.client.put_item().table_name(&self.table).set_item(Some(registry_item(&integration.name)));
            if let Err(e) = put.send().await {
                tracing::warn!(event = Event::IntegrationNotRegistered.as_str(), integration = %integration.name,
                               error = %DisplayErrorContext(e), "listing integrations scans the table until it is");
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
