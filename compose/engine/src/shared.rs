//! The shared cache as the scheduler uses it: a node the local store misses
//! is looked up remotely before it is built, and a node built here is
//! pushed (write-back). What the remote says becomes events; nothing it
//! does can fail a build.

use std::time::Instant;

use kiln_remote::{Fetch, Push, Remote};
use kiln_store::{ActionResult, Digest, Store};

use crate::event::{Event, Events};

/// Tries the remote for `key`; on a verified hit its closure is in the local
/// store and its entry recorded, and the output is returned.
pub(crate) fn fetch(
    remote: Option<&Remote>,
    store: &Store,
    events: &dyn Events,
    node: &str,
    key: &Digest,
) -> Option<Digest> {
    let remote = remote?;
    let started = Instant::now();
    match remote.fetch(store, key) {
        Fetch::Hit {
            result,
            blobs,
            bytes,
        } => {
            events.event(&Event::Fetched {
                recipe: node.to_string(),
                key: key.to_hex(),
                output: result.output.to_hex(),
                blobs,
                bytes,
                seconds: started.elapsed().as_secs_f64(),
            });
            Some(result.output)
        }
        Fetch::Miss | Fetch::Off => None,
        Fetch::Refused(why) => {
            events.event(&Event::Warning {
                message: format!(
                    "{node}: refused the remote cache entry for {}: {why}; building it locally",
                    short(key)
                ),
            });
            None
        }
        Fetch::Unavailable(why) => {
            events.event(&Event::Warning {
                message: unavailable(remote, &why),
            });
            None
        }
    }
}

/// Pushes `key`'s local entry, when there is a writable remote.
pub(crate) fn push(
    remote: Option<&Remote>,
    store: &Store,
    events: &dyn Events,
    node: &str,
    key: &Digest,
) {
    let Some(remote) = remote else { return };
    if remote.read_only() || !remote.can_sign() {
        return;
    }
    let Ok(Some(result)) = store.ac_get(key) else {
        return;
    };
    match push_one(remote, store, key, &result) {
        Ok(Some((blobs, bytes))) => events.event(&Event::Pushed {
            recipe: node.to_string(),
            key: key.to_hex(),
            blobs,
            bytes,
        }),
        Ok(None) => {}
        Err(message) => events.event(&Event::Warning {
            message: format!("{node}: {message}"),
        }),
    }
}

/// One push, as a result: `Some((blobs, bytes))` when something was sent,
/// `None` when nothing had to be (or the remote is off for this process).
fn push_one(
    remote: &Remote,
    store: &Store,
    key: &Digest,
    result: &ActionResult,
) -> Result<Option<(usize, u64)>, String> {
    match remote.push(store, key, result) {
        Push::Uploaded { blobs, bytes } => Ok(Some((blobs, bytes))),
        Push::Present | Push::Off => Ok(None),
        Push::ReadOnly => Err("the remote cache is read-only here (--cache-read-only)".into()),
        Push::Unsigned => Err(
            "no signing key, so nothing is pushed\n  = help: run `kiln cache keygen` and set [cache] signing_key in kiln.toml (or pass --signing-key)".into(),
        ),
        Push::Unavailable(why) => Err(unavailable(remote, &why)),
        Push::Failed(why) => Err(format!("not pushed: {why}")),
    }
}

fn unavailable(remote: &Remote, why: &str) -> String {
    format!(
        "the remote cache {} is unavailable ({why}); going on with the local store only\n  = help: when it is back, `kiln cache push <board>` uploads what was built meanwhile",
        remote.describe()
    )
}

/// A key as messages show it.
pub fn short(key: &Digest) -> String {
    key.to_hex()[..12].to_string()
}
