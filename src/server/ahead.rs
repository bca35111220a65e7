//! Render-ahead: a discovery plugin's MatchRepository starts the render that the app's
//! GenerateManifest will ask for.
//!
//! For an app without a plugin name, Argo's repo-server streams the whole repository twice:
//! MatchRepository, then GenerateManifest with the same env (reposerver/repository
//! `runConfigManagementPluginSidecars`). For a monorepo's later apps at one commit the tree is
//! kept and the archive's index known, so the match's answer is known from the metadata, and
//! the rest of its stream is only received and hashed. Rendering meanwhile lets the render
//! overlap both receives instead of following the first: the GenerateManifest finds the render
//! in the render cache, or waits here for the one in flight.
//!
//! Everything a render-ahead does before its MatchRepository's stream has verified is what a
//! GenerateManifest may do before its own stream has (`RepoTree::unverified`): read the kept
//! tree and run the tools without network. Its result goes into the render cache only once that
//! stream has verified; a stream that fails stops it (tools killed, work dir removed). This
//! registry says which renders are in flight, bounded, so a GenerateManifest can wait for one
//! instead of rendering the same app a second time, and hands the render over to it: also one
//! the render cache does not keep (remote resources, floating chart versions), which the
//! GenerateManifest would otherwise wait for and then run again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::pipeline::cache::{Cached, Key};

/// Renders in flight at most: each holds a render slot's worth of work that no request has
/// asked for yet, so a burst of matches cannot queue renders ahead of real requests.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// How long a render the render cache does not keep stays findable after it ended.
pub(crate) const HANDOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Archives (with their plugin) remembered as having had a GenerateManifest.
const GENERATED_ARCHIVES: usize = 64;

/// The render-aheads in flight, by render-cache key.
#[derive(Debug, Default)]
pub(crate) struct Ahead {
    in_flight: Arc<Mutex<HashMap<Key, InFlight>>>,
    /// `plugin\0checksum` of the latest archives a GenerateManifest of the plugin came for:
    /// a plain app that the match does not claim gets a GenerateManifest only if its
    /// Application names the plugin, which the apps of such a commit do.
    generated: Mutex<VecDeque<String>>,
}

#[derive(Debug)]
struct InFlight {
    /// Its render once made and verified; closed (the sender dropped) when the render-ahead
    /// has ended, whatever its result.
    done: watch::Receiver<Option<Cached>>,
    /// Whether its match's stream has verified. Until then nobody waits for it: a request
    /// must never wait on another request's unverified stream (a slow hostile stream would
    /// stall it).
    verified: watch::Receiver<bool>,
}

/// Marks a render-ahead in flight until dropped.
#[derive(Debug)]
pub(crate) struct Running {
    key: Key,
    in_flight: Arc<Mutex<HashMap<Key, InFlight>>>,
    done: watch::Sender<Option<Cached>>,
}

impl Running {
    /// Hands the render (of a verified stream) to the requests waiting for it.
    pub(crate) fn deliver(&self, render: Cached) {
        self.done.send_replace(Some(render));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.key);
    }
}

/// A render-ahead a request found in flight. It holds the render's channel, so the render is
/// still handed over if it ends before the request gets to ask.
#[derive(Debug)]
pub(crate) struct Found {
    done: watch::Receiver<Option<Cached>>,
}

impl Found {
    /// Waits until the render-ahead has ended: its render (the request's own copy of the
    /// alias budget), or `None` when it failed or was stopped (the request renders for itself).
    pub(crate) async fn ended(mut self) -> Option<Cached> {
        let render = self.done.wait_for(Option::is_some).await.ok()?;
        render.as_ref().map(|r| Cached {
            alias_budget: r.alias_budget.fork(),
            ..r.clone()
        })
    }
}

/// An entry of [`Ahead::generated`] (checksums compared as the render-cache key does).
fn archive_entry(plugin: &str, checksum: &str) -> String {
    format!("{plugin}\0{}", checksum.trim().to_ascii_lowercase())
}

fn lock(m: &Mutex<HashMap<Key, InFlight>>) -> std::sync::MutexGuard<'_, HashMap<Key, InFlight>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ahead {
    /// Registers a render-ahead for `key` whose match's stream has verified once `verified`
    /// is true; `None` when one is in flight for `key` already or [`MAX_IN_FLIGHT`] are.
    pub(crate) fn begin(&self, key: Key, verified: watch::Receiver<bool>) -> Option<Running> {
        let mut map = lock(&self.in_flight);
        if map.len() >= MAX_IN_FLIGHT || map.contains_key(&key) {
            return None;
        }
        let (tx, done) = watch::channel(None);
        map.insert(key, InFlight { done, verified });
        Some(Running {
            key,
            in_flight: self.in_flight.clone(),
            done: tx,
        })
    }

    /// Remembers that a GenerateManifest of `plugin` came for the archive `checksum`.
    pub(crate) fn note_generate(&self, plugin: &str, checksum: &str) {
        let entry = archive_entry(plugin, checksum);
        let mut generated = self.generated.lock().unwrap_or_else(|p| p.into_inner());
        if !generated.contains(&entry) {
            if generated.len() >= GENERATED_ARCHIVES {
                generated.pop_front();
            }
            generated.push_back(entry);
        }
    }

    /// Whether a GenerateManifest of `plugin` came for the archive `checksum` lately.
    pub(crate) fn generated(&self, plugin: &str, checksum: &str) -> bool {
        self.generated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&archive_entry(plugin, checksum))
    }

    /// The render-ahead in flight for `key`, if any and its match's stream has verified.
    pub(crate) fn find(&self, key: &Key) -> Option<Found> {
        lock(&self.in_flight)
            .get(key)
            .filter(|f| *f.verified.borrow())
            .map(|f| Found {
                done: f.done.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::discovery::AppKind;
    use crate::yaml::AliasBudget;

    fn render() -> Cached {
        Cached {
            kind: AppKind::Directory,
            documents: Vec::new(),
            alias_budget: AliasBudget::fixed(),
        }
    }

    #[tokio::test]
    async fn only_a_verified_render_ahead_is_found_and_its_render_outlives_it() {
        let ahead = Ahead::default();
        let (verified, rx) = watch::channel(false);
        let running = ahead.begin([1; 32], rx).expect("room");
        assert!(
            ahead.begin([1; 32], watch::channel(true).1).is_none(),
            "one per key"
        );
        assert!(
            ahead.find(&[1; 32]).is_none(),
            "its match's stream has not verified"
        );
        verified.send_replace(true);
        let found = ahead.find(&[1; 32]).expect("verified");
        running.deliver(render());
        drop(running);
        assert!(ahead.find(&[1; 32]).is_none(), "ended");
        assert!(found.ended().await.is_some(), "handed over after it ended");
    }

    #[tokio::test]
    async fn a_failed_render_ahead_hands_nothing_and_frees_its_place() {
        let ahead = Ahead::default();
        let places: Vec<Running> = (0..MAX_IN_FLIGHT)
            .map(|i| {
                let key = [u8::try_from(i).expect("small"); 32];
                ahead.begin(key, watch::channel(true).1).expect("room")
            })
            .collect();
        assert!(
            ahead.begin([9; 32], watch::channel(true).1).is_none(),
            "bounded"
        );
        let found = ahead.find(&[0; 32]).expect("in flight");
        drop(places);
        assert!(found.ended().await.is_none());
        assert!(ahead.begin([9; 32], watch::channel(true).1).is_some());
    }
}
