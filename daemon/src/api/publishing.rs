//! Requests that sign: a publisher key made, a package published, a release yanked.

use std::path::PathBuf;

use agora_protocol::ipc::{IpcError, PackedFile, PublishedInfo, Response};

use super::{Context, Outbox, bad, body_info, key_error, name, progress, release_info, version};
use crate::store::key_files::{self as keys, KeyFileError};

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

/// `publish DIR [--dry-run]`: a dry run needs no key, and is refused where the publish
/// would be.
pub(super) async fn publish(
    ctx: &Context,
    id: u64,
    out: &Outbox,
    dir: String,
    dry_run: bool,
    allow_missing_dependencies: bool,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        return Err(bad(format!("{} is not an absolute path", dir.display())));
    }
    let secret = match keys::publisher_key(&ctx.paths.keys_dir) {
        Ok(secret) => Some(secret),
        Err(KeyFileError::NoPublisherKey { .. }) if dry_run => None,
        Err(e) => return Err(key_error(e)),
    };
    progress(out, id, "reading package.toml").await;
    let manifest = registry.manifest(dir.clone()).await?;
    let mut warnings: Vec<String> = manifest
        .misspelt_keys()
        .into_iter()
        .map(|(key, known)| {
            format!(
                "[package] key `{key}` is not one Agora reads (it is kept as written); did you \
                 mean `{known}`?"
            )
        })
        .collect();
    if !allow_missing_dependencies {
        registry.check_dependencies(&manifest).await?;
    }
    if dry_run {
        progress(out, id, "packing").await;
        let key = secret.as_ref().map(|s| s.public());
        let run = registry.dry_run(dir, key).await?;
        let mut release = body_info(&run.body, String::new(), false);
        if key.is_none() {
            release.publisher = String::new();
            warnings.push(
                "this node has no publisher key yet: 'agora keygen' makes the one that would \
                 sign it"
                    .into(),
            );
        }
        return Ok(Response::Published(PublishedInfo {
            release,
            published: false,
            gossiped: false,
            files: packed(run.files),
            warnings,
        }));
    }
    let Some(secret) = secret else {
        unreachable!("without a key only a dry run gets this far");
    };
    progress(out, id, "packing, signing and storing").await;
    let published = registry.publish(dir, &secret).await?;
    Ok(Response::Published(PublishedInfo {
        release: release_info(&published.record, false),
        published: true,
        gossiped: published.gossiped,
        files: packed(published.files),
        warnings,
    }))
}

fn packed(files: Vec<(String, u64)>) -> Vec<PackedFile> {
    files
        .into_iter()
        .map(|(path, size)| PackedFile { path, size })
        .collect()
}

/// `yank NAME@VERSION`.
pub(super) async fn yank(
    ctx: &Context,
    n: String,
    v: String,
    reason: String,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    if reason.chars().any(char::is_control) {
        return Err(IpcError::BadRequest(
            "a yank's reason is one line of text, without control characters".into(),
        ));
    }
    let secret = keys::publisher_key(&ctx.paths.keys_dir).map_err(key_error)?;
    registry
        .yank(&name(&n)?, &version(&v)?, reason, &secret)
        .await?;
    Ok(Response::Yanked)
}

/// `yank --undo NAME@VERSION`.
pub(super) async fn unyank(ctx: &Context, n: String, v: String) -> Result<Response, IpcError> {
    let secret = keys::publisher_key(&ctx.paths.keys_dir).map_err(key_error)?;
    let undone = ctx
        .registry
        .unyank(&name(&n)?, &version(&v)?, &secret)
        .await?;
    Ok(Response::Unyanked { undone })
}
