//! Requests that sign: a publisher key made, a package published, a release yanked.

use std::path::PathBuf;
use std::sync::Arc;

use agora_protocol::Manifest;
use agora_protocol::ipc::{IpcError, PackedFile, PublishedInfo, Response};

use super::{Context, Outbox, bad, body_info, key_error, name, progress, release_info, version};
use crate::ops::Registry;
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
        check_dependencies(registry, &manifest).await?;
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

/// Refuses a release whose dependency no catalog this node reaches can meet (the DHT is
/// asked first): it could not be installed.
async fn check_dependencies(registry: &Arc<Registry>, manifest: &Manifest) -> Result<(), IpcError> {
    for d in &manifest.dependencies {
        if registry.view().has_match(&d.name, &d.req) {
            continue;
        }
        // Not found on the DHT either is what the check below says; how the lookup failed
        // (no peers, say) changes nothing about it.
        let _ = registry.look_up(&d.name, &d.req).await;
        let view = registry.view();
        if view.has_match(&d.name, &d.req) {
            continue;
        }
        let why = match view.versions(&d.name) {
            Ok(versions) => {
                let installable: Vec<String> = versions
                    .iter()
                    .filter(|v| !v.yanked && !v.equivocated)
                    .map(|v| v.version.to_string())
                    .collect();
                format!(
                    "no installable version of '{}' matches {} (there are: {})",
                    d.name,
                    d.req,
                    if installable.is_empty() {
                        "none".to_string()
                    } else {
                        installable.join(", ")
                    }
                )
            }
            Err(_) => format!("'{}' is in no catalog this node reaches", d.name),
        };
        return Err(IpcError::NotFound(format!(
            "dependency {d}: {why}, so this release could not be installed"
        )));
    }
    Ok(())
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
