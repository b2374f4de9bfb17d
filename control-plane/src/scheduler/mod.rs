//! The scheduler: turns what should run (apps, their builds and
//! min_instances) into instances on nodes, and hands every connected agent
//! the full desired set for its node. Level-triggered: each pass looks at
//! the whole state, so any restart converges again.
//!
//! - [`placement`]: best fit of one instance.

pub mod placement;

use crate::{
    sessions::Sessions,
    store::{
        apps::AppRecord, builds::BuildRecord, instances::InstanceRecord, nodes::NodeRecord, Store,
    },
};
use berth_proto::{
    domain::{AppState, BuildState, DesiredInstanceState, InstanceState, NodeName, NodeState},
    pb::{self, control_message::Message as Down},
};
use placement::Candidate;
use std::{
    collections::{hash_map::DefaultHasher, HashMap},
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often a pass runs when nothing asks for one.
const PERIOD: Duration = Duration::from_secs(2);

pub struct Scheduler {
    store: Store,
    sessions: Sessions,
    wake: Notify,
    build_timeout: Duration,
    /// Each tenant's share of builds where it has none of its own.
    tenant_defaults: crate::quotas::Defaults,
    /// Hash of the desired set last sent to each node.
    sent: Mutex<HashMap<String, u64>>,
    generation: AtomicU64,
}

fn docker_available(node: &NodeRecord) -> bool {
    node.runtimes
        .iter()
        .any(|r| r.name == "docker" && r.available)
}

fn active(state: InstanceState) -> bool {
    state.is_active()
}

impl Scheduler {
    pub fn new(
        store: Store,
        sessions: Sessions,
        build_timeout: Duration,
        tenant_defaults: crate::quotas::Defaults,
    ) -> Arc<Self> {
        // Generations grow across restarts too: start from the clock.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Arc::new(Self {
            store,
            sessions,
            wake: Notify::new(),
            build_timeout,
            tenant_defaults,
            sent: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(start),
        })
    }

    /// Asks for a pass soon.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// A node (re)connected: it gets its full desired set on the next pass.
    pub fn node_connected(&self, node: &NodeName) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node.as_str());
        self.kick();
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.pass().await {
                tracing::error!(error = %err, "scheduler pass failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(PERIOD) => {}
            }
        }
    }

    /// One pass over the whole cluster.
    pub async fn pass(&self) -> crate::error::Result<()> {
        self.store.lose_instances_on_down_nodes().await?;
        let nodes = self.store.list_nodes(None).await?;
        let usable: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| {
                n.state == NodeState::Ready
                    && docker_available(n)
                    && self.sessions.is_connected(&n.name)
            })
            .collect();
        self.dispatch_builds(&usable).await?;

        let apps = self.store.list_apps(None).await?;
        let mut instances = self.store.all_instances().await?;
        let mut builds: HashMap<String, BuildRecord> = HashMap::new();
        for build_id in apps
            .iter()
            .filter_map(|a| a.current_build_id.clone())
            .chain(instances.iter().filter_map(|i| i.build_id.clone()))
        {
            if let std::collections::hash_map::Entry::Vacant(slot) = builds.entry(build_id) {
                if let Ok(build) = self.store.get_build(slot.key()).await {
                    slot.insert(build);
                }
            }
        }
        for app in &apps {
            self.converge_app(app, &builds, &usable, &apps, &mut instances)
                .await?;
        }
        self.push_desired(&nodes, &apps, &instances, &builds).await;
        Ok(())
    }

    /// Sends each unfinished build to a node that can build it, oldest
    /// first, each tenant within its share of builds at once.
    async fn dispatch_builds(&self, usable: &[&NodeRecord]) -> crate::error::Result<()> {
        let builds = self.store.unfinished_builds().await?;
        let in_progress = |build: &crate::store::builds::BuildRecord| {
            build
                .node_name
                .as_deref()
                .is_some_and(|n| usable.iter().any(|u| u.name.as_str() == n))
        };
        let mut apps: HashMap<String, AppRecord> = HashMap::new();
        for build in &builds {
            if !apps.contains_key(&build.app_id) {
                match self.store.get_app(&build.app_id).await {
                    Ok(app) => {
                        apps.insert(build.app_id.clone(), app);
                    }
                    // Deleted meanwhile: its builds go with it.
                    Err(crate::error::Error::NotFound(_)) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        let builds: Vec<BuildRecord> = builds
            .into_iter()
            .filter(|b| apps.contains_key(&b.app_id))
            .collect();
        let mut busy: HashMap<String, usize> = HashMap::new();
        let mut building: HashMap<String, usize> = HashMap::new();
        for build in builds.iter().filter(|b| in_progress(b)) {
            if let Some(node) = &build.node_name {
                *busy.entry(node.clone()).or_default() += 1;
            }
            *building
                .entry(apps[&build.app_id].spec.tenant.clone())
                .or_default() += 1;
        }
        let limits = self.store.tenant_limits().await?;
        for build in builds {
            if in_progress(&build) {
                continue;
            }
            let app = &apps[&build.app_id];
            let tenant = &app.spec.tenant;
            let share = self
                .tenant_defaults
                .running_builds(&limits.get(tenant).copied().unwrap_or_default());
            let running = building.get(tenant).copied().unwrap_or(0);
            if running >= share {
                if build.node_name.is_some() {
                    self.store.assign_build(&build.id, None).await?;
                }
                self.store
                    .set_app_status(
                        &app.id,
                        AppState::Building,
                        &format!("waiting: tenant {tenant} has {running} builds running (its share is {share})"),
                    )
                    .await?;
                continue;
            }
            let Some(node) = usable.iter().min_by_key(|n| {
                (
                    busy.get(n.name.as_str()).copied().unwrap_or(0),
                    n.name.clone(),
                )
            }) else {
                self.store.assign_build(&build.id, None).await?;
                self.store
                    .set_app_status(
                        &app.id,
                        AppState::Building,
                        "waiting for a ready node with Docker to build on",
                    )
                    .await?;
                continue;
            };
            self.store
                .assign_build(&build.id, Some(node.name.as_str()))
                .await?;
            let request = pb::BuildRequest {
                build_id: build.id.clone(),
                app_id: app.id.clone(),
                tenant: app.spec.tenant.clone(),
                runtime: pb::Runtime::from(app.spec.runtime) as i32,
                image_tag: build.image_tag.clone(),
                timeout_seconds: self.build_timeout.as_secs() as u32,
                context_bytes: build.context_bytes,
            };
            if self
                .sessions
                .send(
                    &node.name,
                    pb::ControlMessage {
                        message: Some(Down::Build(request)),
                    },
                )
                .await
            {
                *busy.entry(node.name.to_string()).or_default() += 1;
                *building.entry(tenant.clone()).or_default() += 1;
                self.store
                    .set_app_status(
                        &app.id,
                        AppState::Building,
                        &format!("building on {}", node.name),
                    )
                    .await?;
                tracing::info!(build = %build.id, node = %node.name, "build dispatched");
            } else {
                self.store.assign_build(&build.id, None).await?;
            }
        }
        Ok(())
    }

    fn candidates(
        &self,
        usable: &[&NodeRecord],
        apps: &[AppRecord],
        instances: &[InstanceRecord],
        app_id: &str,
    ) -> Vec<Candidate> {
        let limits: HashMap<&str, (i64, i64)> = apps
            .iter()
            .map(|a| {
                (
                    a.id.as_str(),
                    (i64::from(a.spec.cpu_millis), a.spec.memory_bytes as i64),
                )
            })
            .collect();
        usable
            .iter()
            .map(|node| {
                let here = instances.iter().filter(|i| {
                    i.node_name.as_deref() == Some(node.name.as_str()) && active(i.state)
                });
                let (mut cpu, mut mem, mut same) = (0i64, 0i64, 0usize);
                for instance in here {
                    let (c, m) = limits
                        .get(instance.app_id.as_str())
                        .copied()
                        .unwrap_or((0, 0));
                    cpu += c;
                    mem += m;
                    same += usize::from(instance.app_id == app_id);
                }
                Candidate {
                    name: node.name.to_string(),
                    free_cpu_millis: i64::from(node.cpu_millis) - cpu,
                    free_memory_bytes: node.memory_bytes as i64 - mem,
                    same_app: same,
                }
            })
            .collect()
    }

    /// Brings one app's instances to what it wants.
    async fn converge_app(
        &self,
        app: &AppRecord,
        builds: &HashMap<String, BuildRecord>,
        usable: &[&NodeRecord],
        apps: &[AppRecord],
        instances: &mut Vec<InstanceRecord>,
    ) -> crate::error::Result<()> {
        let Some(build) = app.current_build_id.as_ref().and_then(|id| builds.get(id)) else {
            return Ok(());
        };
        let want = app.wanted_instances(chrono::Utc::now());
        if app.stopped {
            // Stopping needs no build: every instance goes.
            for instance in instances.iter().filter(|i| i.app_id == app.id) {
                self.store.delete_instance(&instance.id).await?;
            }
            instances.retain(|i| i.app_id != app.id);
            return Ok(());
        }
        if build.state != BuildState::Ready {
            return Ok(());
        }
        // Lost copies are replaced; the node removes their containers if it comes back.
        let lost: Vec<String> = instances
            .iter()
            .filter(|i| i.app_id == app.id && i.state == InstanceState::Lost)
            .map(|i| i.id.clone())
            .collect();
        for id in &lost {
            self.store.delete_instance(id).await?;
        }
        instances.retain(|i| !lost.contains(&i.id));

        let current: Vec<InstanceRecord> = instances
            .iter()
            .filter(|i| i.app_id == app.id && i.build_id.as_deref() == Some(build.id.as_str()))
            .cloned()
            .collect();
        // Too many: remove unplaced and newest first.
        if current.len() > want {
            let mut extra = current.clone();
            extra.sort_by_key(|i| (i.node_name.is_some(), std::cmp::Reverse(i.created_at)));
            for instance in extra.into_iter().take(current.len() - want) {
                self.store.delete_instance(&instance.id).await?;
                instances.retain(|i| i.id != instance.id);
            }
        }
        let mut reason = String::new();
        // Place what is missing, one at a time so each sees the last.
        let have = instances
            .iter()
            .filter(|i| i.app_id == app.id && i.build_id.as_deref() == Some(build.id.as_str()))
            .count();
        for _ in have..want {
            let candidates = self.candidates(usable, apps, instances, &app.id);
            let instance = match placement::best_fit(
                &candidates,
                app.spec.cpu_millis,
                app.spec.memory_bytes,
            ) {
                Ok(node) => {
                    self.store
                        .create_instance(&app.id, &build.id, Some(&node.name), "")
                        .await?
                }
                Err(why) => {
                    reason = why.clone();
                    self.store
                        .create_instance(&app.id, &build.id, None, &why)
                        .await?
                }
            };
            instances.push(instance);
        }
        let unplaced: Vec<String> = instances
            .iter()
            .filter(|i| i.app_id == app.id && i.node_name.is_none())
            .map(|i| i.id.clone())
            .collect();
        for id in unplaced {
            let candidates = self.candidates(usable, apps, instances, &app.id);
            match placement::best_fit(&candidates, app.spec.cpu_millis, app.spec.memory_bytes) {
                Ok(node) => {
                    let node = node.name.clone();
                    self.store.place_instance(&id, &node).await?;
                    if let Some(instance) = instances.iter_mut().find(|i| i.id == id) {
                        instance.node_name = Some(node);
                        instance.error.clear();
                    }
                }
                Err(why) => {
                    self.store.set_instance_reason(&id, &why).await?;
                    reason = why;
                }
            }
        }

        let current: Vec<InstanceRecord> = instances
            .iter()
            .filter(|i| i.app_id == app.id && i.build_id.as_deref() == Some(build.id.as_str()))
            .cloned()
            .collect();
        let running = current
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        // Rolling: the previous build's copies go once the new ones all run.
        if running >= want {
            let old: Vec<String> = instances
                .iter()
                .filter(|i| i.app_id == app.id && i.build_id.as_deref() != Some(build.id.as_str()))
                .map(|i| i.id.clone())
                .collect();
            for id in &old {
                self.store.delete_instance(id).await?;
            }
            instances.retain(|i| !old.contains(&i.id));
        }
        let failed = current.iter().find(|i| i.state == InstanceState::Failed);
        let (state, message) = if want == 0 {
            (
                AppState::Running,
                "scaled to zero; the first request starts it".to_owned(),
            )
        } else if running >= want {
            (AppState::Running, String::new())
        } else if let Some(failed) = failed {
            if running > 0 {
                (
                    AppState::Running,
                    format!("{running} of {want} instances running; {}", failed.error),
                )
            } else {
                (AppState::Failed, failed.error.clone())
            }
        } else if !reason.is_empty() {
            (AppState::Deploying, reason)
        } else {
            (
                AppState::Deploying,
                format!("{running} of {want} instances running"),
            )
        };
        self.store.set_app_status(&app.id, state, &message).await?;
        Ok(())
    }

    /// Sends each connected node its desired set when it changed.
    async fn push_desired(
        &self,
        nodes: &[NodeRecord],
        apps: &[AppRecord],
        instances: &[InstanceRecord],
        builds: &HashMap<String, BuildRecord>,
    ) {
        let apps: HashMap<&str, &AppRecord> = apps.iter().map(|a| (a.id.as_str(), a)).collect();
        for node in nodes.iter().filter(|n| self.sessions.is_connected(&n.name)) {
            let mut specs: Vec<pb::InstanceSpec> = instances
                .iter()
                .filter(|i| {
                    i.node_name.as_deref() == Some(node.name.as_str())
                        && i.state != InstanceState::Lost
                })
                .filter_map(|i| {
                    let app = apps.get(i.app_id.as_str())?;
                    let build = builds.get(i.build_id.as_deref()?)?;
                    Some(instance_spec(app, build, i))
                })
                .collect();
            specs.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
            let mut hasher = DefaultHasher::new();
            format!("{specs:?}").hash(&mut hasher);
            let hash = hasher.finish();
            let unchanged = self
                .sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(node.name.as_str())
                == Some(&hash);
            if unchanged {
                continue;
            }
            let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
            let count = specs.len();
            let message = pb::ControlMessage {
                message: Some(Down::DesiredState(pb::DesiredState {
                    generation,
                    instances: specs,
                })),
            };
            if self.sessions.send(&node.name, message).await {
                self.sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.name.to_string(), hash);
                tracing::debug!(node = %node.name, generation, instances = count, "desired state sent");
            }
        }
    }
}

fn instance_spec(
    app: &AppRecord,
    build: &BuildRecord,
    instance: &InstanceRecord,
) -> pb::InstanceSpec {
    pb::InstanceSpec {
        instance_id: instance.id.clone(),
        app_id: app.id.clone(),
        tenant: app.spec.tenant.clone(),
        app_name: app.spec.name.clone(),
        image: build.image_tag.clone(),
        container_port: u32::from(app.spec.container_port),
        cpu_millis: app.spec.cpu_millis,
        memory_bytes: app.spec.memory_bytes,
        env: app.spec.env.clone().into_iter().collect(),
        desired_state: pb::DesiredInstanceState::from(DesiredInstanceState::Running) as i32,
        command: app.spec.command.clone(),
        build_id: build.id.clone(),
        runtime: pb::Runtime::from(app.spec.runtime) as i32,
        context_bytes: build.context_bytes,
    }
}
