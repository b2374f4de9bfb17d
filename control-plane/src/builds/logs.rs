//! Build output as it arrives: kept (newest 64 KiB) in the database and
//! fanned out to followers of `StreamBuildLogs`.

use crate::store::Store;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::broadcast;

#[derive(Clone, Default)]
pub struct BuildLogs {
    live: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>>,
}

impl BuildLogs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Arc<str>>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Output of a running build: stored, then sent to followers.
    pub async fn append(
        &self,
        store: &Store,
        build_id: &str,
        text: &str,
    ) -> crate::error::Result<()> {
        store.append_build_logs(build_id, text).await?;
        let sender = self
            .lock()
            .entry(build_id.to_owned())
            .or_insert_with(|| broadcast::channel(256).0)
            .clone();
        let _ = sender.send(Arc::from(text));
        Ok(())
    }

    /// The build ended: followers see the end of their stream.
    pub fn finish(&self, build_id: &str) {
        self.lock().remove(build_id);
    }

    /// Live output from now on, while the build runs.
    pub fn follow(&self, build_id: &str) -> broadcast::Receiver<Arc<str>> {
        self.lock()
            .entry(build_id.to_owned())
            .or_insert_with(|| broadcast::channel(256).0)
            .subscribe()
    }
}
