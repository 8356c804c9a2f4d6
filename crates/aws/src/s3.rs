//! S3 as the object sink: part files streamed with multipart upload (aborted on failure), small
//! objects with one PutObject, server-side encryption always requested.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::{Bytes, BytesMut};

use capsule_core::observe::Event;
use capsule_core::ports::{ObjectSink, ObjectUpload};
use capsule_core::{Result, SyncError};

/// S3 parts must be at least 5 MiB (but the last); upload in parts of that size: the part
/// writer hands over 5 MiB chunks, so each is sent as it comes and no second buffer fills.
pub(crate) const MIN_PART_BYTES: usize = 5 << 20;

/// A bucket (and key prefix) as an object sink.
#[derive(Clone, Debug)]
pub struct S3Sink {
    client: Client,
    bucket: String,
    prefix: String,
    /// `aws:kms` with this key, or AES256 (SSE-S3) when None.
    kms_key_id: Option<String>,
    part_bytes: usize,
}

impl S3Sink {
    pub fn new(client: Client, bucket: &str, prefix: &str, kms_key_id: Option<String>) -> S3Sink {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        S3Sink { client, bucket: bucket.to_string(), prefix, kms_key_id, part_bytes: MIN_PART_BYTES }
    }

    /// Upload part size (≥ 5 MiB; S3 rejects smaller parts but the last).
    pub fn with_part_bytes(mut self, bytes: usize) -> S3Sink {
        self.part_bytes = bytes.max(5 << 20);
        self
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn sse(&self) -> ServerSideEncryption {
        if self.kms_key_id.is_some() { ServerSideEncryption::AwsKms } else { ServerSideEncryption::Aes256 }
    }
}

fn s3_err<E: std::error::Error>(op: &str, bucket: &str, key: &str, e: E) -> SyncError {
    SyncError::Output(format!("S3 {op} s3://{bucket}/{key}: {}", DisplayErrorContext(e)))
}

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".gz") {
        "application/gzip"
    } else if key.ends_with(".json") {
        "application/json"
    } else if key.ends_with(".ndjson") {
        "application/x-ndjson"
    } else {
        "text/plain"
    }
}

#[async_trait]
impl ObjectSink for S3Sink {
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectUpload>> {
        Ok(Box::new(S3Upload {
            sink: self.clone(),
            key: self.full_key(key),
            buffer: BytesMut::new(),
            upload_id: None,
            parts: Vec::new(),
        }))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let key = self.full_key(key);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type(&key))
            .server_side_encryption(self.sse())
            .body(ByteStream::from(body));
        if let Some(kms) = &self.kms_key_id {
            req = req.ssekms_key_id(kms);
        }
        req.send().await.map_err(|e| s3_err("PutObject", &self.bucket, &key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = self.full_key(key);
        match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => {
                let body = out.body.collect().await.map_err(|e| s3_err("GetObject", &self.bucket, &key, e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_err("GetObject", &self.bucket, &key, e)),
        }
    }

    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        if range.is_empty() {
            return Ok(Some(Bytes::new()));
        }
        let key = self.full_key(key);
        let bytes = format!("bytes={}-{}", range.start, range.end - 1);
        match self.client.get_object().bucket(&self.bucket).key(&key).range(bytes).send().await {
            Ok(out) => {
                let body = out.body.collect().await.map_err(|e| s3_err("GetObject", &self.bucket, &key, e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_err("GetObject", &self.bucket, &key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.full_key(prefix);
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_err("ListObjectsV2", &self.bucket, &full, e))?;
            for object in page.contents() {
                if let Some(k) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    keys.push(k.to_string());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = self.full_key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObject", &self.bucket, &key, e))?;
        Ok(())
    }

    fn locate(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }
}

/// One object being streamed: buffered until a part's worth, then multipart.
struct S3Upload {
    sink: S3Sink,
    key: String,
    buffer: BytesMut,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl S3Upload {
    async fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let s = &self.sink;
        let mut req = s
            .client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .content_type(content_type(&self.key))
            .server_side_encryption(s.sse());
        if let Some(kms) = &s.kms_key_id {
            req = req.ssekms_key_id(kms);
        }
        let out = req.send().await.map_err(|e| s3_err("CreateMultipartUpload", &s.bucket, &self.key, e))?;
        let id = out
            .upload_id()
            .ok_or_else(|| SyncError::Output(format!("S3 returned no upload id for s3://{}/{}", s.bucket, self.key)))?
            .to_string();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn upload_buffer(&mut self) -> Result<()> {
        let upload_id = self.upload_id().await?;
        let number = self.parts.len() as i32 + 1;
        let body = self.buffer.split().freeze();
        let s = &self.sink;
        let out = s
            .client
            .upload_part()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_err("UploadPart", &s.bucket, &self.key, e))?;
        self.parts
            .push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_string)).build());
        Ok(())
    }

    async fn abort_upload(&self) {
        if let Some(id) = &self.upload_id {
            let s = &self.sink;
            if let Err(e) =
                s.client.abort_multipart_upload().bucket(&s.bucket).key(&self.key).upload_id(id).send().await
            {
                tracing::warn!(event = Event::MultipartAbortFailed.as_str(), key = %self.key, error = %DisplayErrorContext(e));
            }
        }
    }
}

#[async_trait]
impl ObjectUpload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&chunk);
        if self.buffer.len() >= self.sink.part_bytes
            && let Err(e) = self.upload_buffer().await
        {
            self.abort_upload().await;
            return Err(e);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        if self.upload_id.is_none() {
            let body = self.buffer.split().freeze();
            let key = self.key.strip_prefix(&self.sink.prefix).unwrap_or(&self.key).to_string();
            return self.sink.put(&key, body).await;
        }
        let result = async {
            if !self.buffer.is_empty() {
                self.upload_buffer().await?;
            }
            let s = &self.sink;
            s.client
                .complete_multipart_upload()
                .bucket(&s.bucket)
                .key(&self.key)
                .upload_id(self.upload_id.clone().unwrap_or_default())
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(self.parts.clone())).build())
                .send()
                .await
                .map_err(|e| s3_err("CompleteMultipartUpload", &s.bucket, &self.key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.abort_upload().await;
        }
        result
    }

    async fn abort(self: Box<Self>) {
        self.abort_upload().await;
    }
}
