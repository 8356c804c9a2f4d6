//! Writes fenced on a lease: the transaction items that keep, replace or release it, the
//! bookmark written only from the generation the run started from, and parking.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use chrono::Utc;

use capsule_core::Result;
use capsule_core::ports::{Bookmark, BookmarkBase, Lease, Parking, TableRunRecord};

use super::*;

impl DynamoState {
    pub(super) fn lease_key(lease: &Lease) -> (AttributeValue, AttributeValue) {
        (pk(&lease.integration), s(format!("LEASE#{}", lease.table)))
    }

    /// Deletes our lease — the condition that makes a commit ours alone.
    pub(super) fn release_ours(&self, lease: &Lease) -> TransactWriteItem {
        let (p, k) = Self::lease_key(lease);
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", p)
            .key("sk", k)
            .condition_expression(HELD)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(lease.owner.to_string()))
            .expression_attribute_values(":fence", n(lease.fence as i64))
            .build()
            .expect("table, key and condition are set");
        TransactWriteItem::builder().delete(delete).build()
    }

    /// Replaces our lease with `next` — only while `held` is still ours.
    pub(super) fn replace_ours(&self, held: &Lease, next: &Lease) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(lease_item(next)?))
            .condition_expression(HELD)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(held.owner.to_string()))
            .expression_attribute_values(":fence", n(held.fence as i64))
            .build()
            .expect("table, item and condition are set");
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Stores the checkpoint, parks the lease and writes the run record, in one transaction.
    pub(super) async fn park(&self, lease: &Lease, parking: &Parking, record: &TableRunRecord) -> Result<()> {
        let items = vec![
            self.replace_ours(lease, &lease.parked(parking))?,
            self.put(doc_item(pk(&lease.integration), format!("CHECKPOINT#{}", lease.table), &parking.checkpoint)?),
            self.put(self.run_item(record)?),
            self.delete(&lease.integration, running_sk(record)),
        ];
        self.transact(items, lease).await?;
        self.wake_after_write(&lease.integration, parking.checkpoint.not_before.unwrap_or_else(Utc::now)).await;
        Ok(())
    }

    pub(super) async fn lease(&self, integration: &str, table: &str) -> Result<Option<Lease>> {
        self.get(integration, &format!("LEASE#{table}")).await?.map(|i| from_item(&i)).transpose()
    }

    pub(super) fn put(&self, item: Item) -> TransactWriteItem {
        let put = Put::builder().table_name(&self.table).set_item(Some(item)).build().expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }

    pub(super) fn delete(&self, integration: &str, sk: String) -> TransactWriteItem {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", pk(integration))
            .key("sk", s(sk))
            .build()
            .expect("table and key are set");
        TransactWriteItem::builder().delete(delete).build()
    }

    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>, lease: &Lease) -> Result<()> {
        match self.send_transaction(items).await {
            Ok(()) => Ok(()),
            Err(Cancelled::Conditions(_)) => Err(lease.lost()),
            Err(Cancelled::Other(e)) => Err(e),
        }
    }

    /// One transaction, idempotent: the SDK retries a timed-out attempt with the same client
    /// request token, which DynamoDB answers with the first attempt's outcome instead of running
    /// it again (and failing its conditions against its own writes).
    pub(super) async fn send_transaction(&self, items: Vec<TransactWriteItem>) -> std::result::Result<(), Cancelled> {
        let token = format!("{:032x}", rand::random::<u128>());
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match failed_conditions(&e) {
                Some(failed) => Err(Cancelled::Conditions(failed)),
                None => Err(Cancelled::Other(db_err("TransactWriteItems", e))),
            },
        }
    }

    /// Writes the bookmark only if the stored one is still `base`.
    pub(super) fn put_bookmark(
        &self,
        lease: &Lease,
        bookmark: &Bookmark,
        base: BookmarkBase,
    ) -> Result<TransactWriteItem> {
        let mut item = doc_item(pk(&lease.integration), format!("BOOKMARK#{}", lease.table), bookmark)?;
        item.insert("generation".into(), n(bookmark.generation as i64));
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        put = match base {
            BookmarkBase::Unchecked => put,
            BookmarkBase::Absent => put.condition_expression("attribute_not_exists(pk)"),
            // Written before generations existed: the item has no `generation` attribute.
            BookmarkBase::Generation(0) => {
                put.condition_expression("attribute_exists(pk) AND attribute_not_exists(generation)")
            }
            BookmarkBase::Generation(g) => {
                put.condition_expression("generation = :gen").expression_attribute_values(":gen", n(g as i64))
            }
        };
        Ok(TransactWriteItem::builder().put(put.build().expect("table and item are set")).build())
    }
}
