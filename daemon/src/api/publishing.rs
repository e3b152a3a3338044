//! Requests that sign: a publisher key made, a package published, a release yanked.

use std::path::PathBuf;

use agora_protocol::ipc::{IpcError, PublishedInfo, Response};

use super::{Context, Outbox, bad, body_info, key_error, name, progress, release_info, version};
use crate::store::key_files as keys;

/// `keygen`: makes this node's publisher key.
pub(super) async fn keygen(ctx: &Context) -> Result<Response, IpcError> {
    let dir = ctx.paths.keys_dir.clone();
    let secret = tokio::task::spawn_blocking(move || keys::generate_publisher_key(&dir))
        .await
        .map_err(|e| IpcError::Internal(e.to_string()))?
        .map_err(key_error)?;
    let publisher = secret.public().to_hex();
    let _ = ctx.publisher.set(publisher.clone());
    Ok(Response::Key { publisher })
}

/// `publish DIR [--dry-run]`.
pub(super) async fn publish(
    ctx: &Context,
    id: u64,
    out: &Outbox,
    dir: String,
    dry_run: bool,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        return Err(bad(format!("{} is not an absolute path", dir.display())));
    }
    let secret = keys::publisher_key(&ctx.paths.keys_dir).map_err(key_error)?;
    if dry_run {
        progress(out, id, "packing").await;
        let body = registry.dry_run(dir, secret.public()).await?;
        let release = body_info(&body, String::new(), false);
        return Ok(Response::Published(PublishedInfo {
            release,
            published: false,
            gossiped: false,
        }));
    }
    progress(out, id, "packing, signing and storing").await;
    let published = registry.publish(dir, &secret).await?;
    Ok(Response::Published(PublishedInfo {
        release: release_info(&published.record, false),
        published: true,
        gossiped: published.gossiped,
    }))
}

/// `yank NAME@VERSION`.
pub(super) async fn yank(
    ctx: &Context,
    n: String,
    v: String,
    reason: String,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let secret = keys::publisher_key(&ctx.paths.keys_dir).map_err(key_error)?;
    registry
        .yank(&name(&n)?, &version(&v)?, reason, &secret)
        .await?;
    Ok(Response::Yanked)
}
