//! Answers to the control plane's questions about this node's containers:
//! their logs (tail and follow), their resource use, and a cleanup of what
//! no app uses any more.

use super::Links;
use crate::docker::containers::{self, LABEL_MANAGED};
use berth_proto::pb::{
    self, agent_message::Message as Up, agent_reply::Kind as Reply, agent_request::Kind as Ask,
};
use bollard::{container::LogOutput, Docker};
use futures::StreamExt;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Answerer {
    docker: Docker,
    node: String,
    code_dir: std::path::PathBuf,
    links: Links,
    running: Arc<Mutex<HashMap<u64, CancellationToken>>>,
}

impl Answerer {
    pub fn new(docker: Docker, config: &super::DriverConfig, links: Links) -> Self {
        Self {
            docker,
            node: config.node.clone(),
            code_dir: config.code_dir.clone(),
            links,
            running: Arc::default(),
        }
    }

    async fn reply(&self, request_id: u64, kind: Reply) -> bool {
        let reply = pb::AgentReply {
            request_id,
            kind: Some(kind),
        };
        self.links
            .outbox
            .send(pb::AgentMessage {
                message: Some(Up::Reply(reply)),
            })
            .await
            .is_ok()
    }

    /// The asker went away.
    pub fn cancel(&self, request_id: u64) {
        if let Some(token) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request_id)
        {
            token.cancel();
        }
    }

    /// Answers one request; runs until it is answered or cancelled.
    pub async fn answer(&self, request: pb::AgentRequest) {
        let id = request.request_id;
        let token = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, token.clone());
        let work = async {
            match request.kind {
                Some(Ask::Logs(logs)) => self.logs(id, logs).await,
                Some(Ask::Stats(stats)) => self.stats(id, stats).await,
                Some(Ask::Cleanup(request)) => self.cleanup(id, &request.keep_images).await,
                None => Err("empty request".to_owned()),
            }
        };
        let outcome = tokio::select! {
            _ = token.cancelled() => return,
            outcome = work => outcome,
        };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Err(error) = outcome {
            self.reply(id, Reply::Error(error)).await;
        }
        self.reply(id, Reply::Done(true)).await;
    }

    /// Container ids of the given instances on this node.
    async fn containers_of(
        &self,
        instance_ids: &[String],
    ) -> Result<Vec<(String, String)>, String> {
        let managed = containers::list_managed(&self.docker, &self.node)
            .await
            .map_err(|e| e.to_string())?;
        Ok(managed
            .into_iter()
            .filter(|o| instance_ids.contains(&o.instance_id))
            .map(|o| (o.instance_id, o.container_id))
            .collect())
    }

    async fn logs(&self, id: u64, request: pb::LogsRequest) -> Result<(), String> {
        let found = self.containers_of(&request.instance_ids).await?;
        let streams = found.into_iter().map(|(instance_id, container_id)| {
            let options = bollard::query_parameters::LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .follow(request.follow)
                .tail(&request.tail.to_string())
                .build();
            let docker = self.docker.clone();
            async move {
                let mut stream = docker.logs(&container_id, Some(options));
                while let Some(item) = stream.next().await {
                    let (name, bytes) = match item {
                        Ok(LogOutput::StdOut { message }) => ("stdout", message),
                        Ok(LogOutput::StdErr { message }) => ("stderr", message),
                        Ok(LogOutput::Console { message }) => ("stdout", message),
                        Ok(_) => continue,
                        Err(err) => return Err(format!("logs of instance {instance_id}: {err}")),
                    };
                    let text = String::from_utf8_lossy(&bytes);
                    let (stamp, line) = text.split_once(' ').unwrap_or(("", &text));
                    let line = pb::LogLine {
                        instance_id: instance_id.clone(),
                        timestamp: stamp.parse::<prost_types::Timestamp>().ok(),
                        stream: name.to_owned(),
                        line: line.trim_end_matches('\n').as_bytes().to_vec(),
                    };
                    if !self.reply(id, Reply::Log(line)).await {
                        return Ok(());
                    }
                }
                Ok(())
            }
        });
        for result in futures::future::join_all(streams).await {
            result?;
        }
        Ok(())
    }

    async fn stats(&self, id: u64, request: pb::StatsRequest) -> Result<(), String> {
        for (instance_id, container_id) in self.containers_of(&request.instance_ids).await? {
            let options = bollard::query_parameters::StatsOptionsBuilder::default()
                .stream(false)
                .build();
            let Some(Ok(stats)) = self.docker.stats(&container_id, Some(options)).next().await
            else {
                continue;
            };
            let cpu = stats.cpu_stats.unwrap_or_default();
            let pre = stats.precpu_stats.unwrap_or_default();
            let total = |s: &bollard::models::ContainerCpuStats| {
                s.cpu_usage
                    .as_ref()
                    .and_then(|u| u.total_usage)
                    .unwrap_or(0)
            };
            let cpu_delta = total(&cpu).saturating_sub(total(&pre)) as f64;
            let system_delta =
                cpu.system_cpu_usage
                    .unwrap_or(0)
                    .saturating_sub(pre.system_cpu_usage.unwrap_or(0)) as f64;
            let online = f64::from(cpu.online_cpus.unwrap_or(1).max(1));
            let cpu_percent = if system_delta > 0.0 {
                cpu_delta / system_delta * online * 100.0
            } else {
                0.0
            };
            let memory = stats.memory_stats.unwrap_or_default();
            let cache = memory
                .stats
                .as_ref()
                .and_then(|s| s.get("cache").or_else(|| s.get("inactive_file")).copied())
                .unwrap_or(0);
            let used = memory.usage.unwrap_or(0).saturating_sub(cache) as f64;
            let limit = memory.limit.unwrap_or(0) as f64;
            let stats = pb::InstanceStats {
                instance_id,
                cpu_percent: (cpu_percent * 100.0).round() / 100.0,
                memory_mb: (used / 1048576.0 * 100.0).round() / 100.0,
                memory_percent: if limit > 0.0 {
                    (used / limit * 10000.0).round() / 100.0
                } else {
                    0.0
                },
            };
            if !self.reply(id, Reply::Stats(stats)).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Removes this node's containers that no instance wants, networks no
    /// container uses, built app images no container uses, and unpacked
    /// code no instance uses.
    async fn cleanup(&self, id: u64, keep_images: &[String]) -> Result<(), String> {
        let wanted: HashSet<String> = self
            .links
            .desired
            .borrow()
            .as_ref()
            .map(|d| d.instances.iter().map(|i| i.instance_id.clone()).collect())
            .ok_or("this node has not received its desired state yet")?;
        let mut done = pb::CleanupResponse::default();
        let builds_in_use: HashSet<String> = self
            .links
            .desired
            .borrow()
            .as_ref()
            .map(|d| d.instances.iter().map(|i| i.build_id.clone()).collect())
            .unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(&self.code_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // `.partial-*` folders are unpacks in progress.
                if name.starts_with('.') || builds_in_use.contains(&name) {
                    continue;
                }
                if std::fs::remove_dir_all(entry.path()).is_ok() {
                    done.removed_code.push(name);
                }
            }
        }
        let all = containers::list_managed(&self.docker, &self.node)
            .await
            .map_err(|e| e.to_string())?;
        for container in &all {
            if !wanted.contains(&container.instance_id) {
                containers::remove(&self.docker, &container.container_id)
                    .await
                    .map_err(|e| e.to_string())?;
                done.removed_containers.push(container.container_id.clone());
            }
        }
        let managed = HashMap::from([("label".to_owned(), vec![format!("{LABEL_MANAGED}=true")])]);
        // Images used by any container on this host, Berth's or not.
        let used: HashSet<String> = self
            .docker
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .all(true)
                    .build(),
            ))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|c| c.image_id)
            .collect();
        let images = self
            .docker
            .list_images(Some(
                bollard::query_parameters::ListImagesOptionsBuilder::default()
                    .filters(&managed)
                    .build(),
            ))
            .await
            .map_err(|e| e.to_string())?;
        // Unused, built by this node, and not an app's current image (just
        // built, its instance not started yet).
        for image in images.into_iter().filter(|i| {
            !used.contains(&i.id)
                && i.labels.get("berth.node") == Some(&self.node)
                && !i.repo_tags.iter().any(|t| keep_images.contains(t))
        }) {
            let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(false)
                .build();
            if self
                .docker
                .remove_image(&image.id, Some(options), None)
                .await
                .is_ok()
            {
                done.removed_images.extend(if image.repo_tags.is_empty() {
                    vec![image.id.clone()]
                } else {
                    image.repo_tags.clone()
                });
            }
        }
        let networks = self
            .docker
            .list_networks(Some(
                bollard::query_parameters::ListNetworksOptionsBuilder::default()
                    .filters(&managed)
                    .build(),
            ))
            .await
            .map_err(|e| e.to_string())?;
        for network in networks {
            // The apps' network stays; others are from an earlier layout
            // (a network per app).
            if let Some(name) = network
                .name
                .filter(|n| *n != crate::docker::network::current())
            {
                // Refused while a container still uses it: that is fine.
                let _ = self.docker.remove_network(&name).await;
            }
        }
        self.reply(id, Reply::Cleanup(done)).await;
        Ok(())
    }
}
