//! The execution queue: one line per tenant, served in turn, so a tenant
//! that floods Berth waits behind its own runs while every other tenant's
//! next run still gets the next free slot.

use berth_proto::{domain::Language, pb};
use std::collections::{HashMap, HashSet, VecDeque};

/// A run waiting for a slot.
pub struct Queued {
    pub id: String,
    pub tenant: String,
    pub language: Language,
    pub request: pb::ExecutionRequest,
}

/// Where the run at the head of a tenant's line can go now.
pub enum Fit<N> {
    /// To this node (its slot is taken).
    Place(N),
    /// Nowhere free at the moment: the tenant waits.
    NotNow,
    /// Nowhere at all (no node runs the language): out of the queue.
    Never,
}

/// Waiting runs by tenant, and the order tenants are served in.
#[derive(Default)]
pub struct FairQueue {
    lines: HashMap<String, VecDeque<Queued>>,
    /// Tenants with waiting runs; the front is served next.
    turn: VecDeque<String>,
    len: usize,
}

impl FairQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs `tenant` has waiting.
    pub fn waiting(&self, tenant: &str) -> usize {
        self.lines.get(tenant).map_or(0, VecDeque::len)
    }

    /// Adds a run at the end of its tenant's line.
    pub fn push_back(&mut self, run: Queued) {
        self.line(&run.tenant).push_back(run);
        self.len += 1;
    }

    /// Puts a run back at the head of its tenant's line (its node went away).
    pub fn push_front(&mut self, run: Queued) {
        self.line(&run.tenant).push_front(run);
        self.len += 1;
    }

    fn line(&mut self, tenant: &str) -> &mut VecDeque<Queued> {
        if !self.lines.contains_key(tenant) {
            self.turn.push_back(tenant.to_owned());
        }
        self.lines.entry(tenant.to_owned()).or_default()
    }

    /// Takes run `id` out of the queue; whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some((tenant, line)) = self
            .lines
            .iter_mut()
            .find(|(_, line)| line.iter().any(|q| q.id == id))
        else {
            return false;
        };
        line.retain(|q| q.id != id);
        let (tenant, empty) = (tenant.clone(), line.is_empty());
        self.len -= 1;
        if empty {
            self.forget(&tenant);
        }
        true
    }

    fn forget(&mut self, tenant: &str) {
        self.lines.remove(tenant);
        self.turn.retain(|t| t != tenant);
    }

    /// Takes every run that may start now: tenants in turn, one run each
    /// per round, none beyond `cap(tenant)` runs at once (`running` counts
    /// them and is updated); `fit` finds each run a node. A tenant served
    /// goes to the back of the turn. Returns the placed runs, and those
    /// that can never run.
    pub fn take<N>(
        &mut self,
        running: &mut HashMap<String, usize>,
        cap: impl Fn(&str) -> usize,
        mut fit: impl FnMut(&Queued) -> Fit<N>,
    ) -> (Vec<(N, Queued)>, Vec<Queued>) {
        let (mut placed, mut never) = (Vec::new(), Vec::new());
        let mut stalled: HashSet<String> = HashSet::new();
        while let Some(tenant) = self.turn.iter().find(|t| !stalled.contains(*t)).cloned() {
            let count = running.get(&tenant).copied().unwrap_or(0);
            if count >= cap(&tenant) {
                stalled.insert(tenant);
                continue;
            }
            let line = self
                .lines
                .get_mut(&tenant)
                .expect("a tenant in turn has a line");
            let head = line.front().expect("a tenant's line is never empty");
            match fit(head) {
                Fit::NotNow => {
                    stalled.insert(tenant);
                    continue;
                }
                Fit::Never => never.push(line.pop_front().expect("head")),
                Fit::Place(node) => {
                    placed.push((node, line.pop_front().expect("head")));
                    *running.entry(tenant.clone()).or_default() += 1;
                    self.turn.retain(|t| *t != tenant);
                    self.turn.push_back(tenant.clone());
                }
            }
            self.len -= 1;
            if self.lines.get(&tenant).is_some_and(VecDeque::is_empty) {
                self.forget(&tenant);
            }
        }
        (placed, never)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, tenant: &str) -> Queued {
        Queued {
            id: id.into(),
            tenant: tenant.into(),
            language: Language::Python,
            request: pb::ExecutionRequest::default(),
        }
    }

    /// Places runs while `slots` last.
    fn take(
        queue: &mut FairQueue,
        running: &mut HashMap<String, usize>,
        slots: usize,
        cap: usize,
    ) -> Vec<String> {
        let mut free = slots;
        let (placed, _) = queue.take(
            running,
            |_| cap,
            |_| {
                if free == 0 {
                    Fit::NotNow
                } else {
                    free -= 1;
                    Fit::Place(())
                }
            },
        );
        placed.into_iter().map(|(_, q)| q.id).collect()
    }

    #[test]
    fn a_flooding_tenant_waits_behind_its_own_runs() {
        let mut queue = FairQueue::default();
        for i in 0..50 {
            queue.push_back(run(&format!("a{i}"), "a"));
        }
        queue.push_back(run("b0", "b"));
        queue.push_back(run("b1", "b"));
        let mut running = HashMap::new();
        // Two slots, half each at most: one run of each tenant.
        assert_eq!(take(&mut queue, &mut running, 2, 1), ["a0", "b0"]);
        assert_eq!(queue.len(), 50);
        assert_eq!(queue.waiting("b"), 1);
        // A's run ends: its slot goes to whoever is next in turn and under
        // their cap — b is at its cap, so a.
        *running.get_mut("a").unwrap() -= 1;
        assert_eq!(take(&mut queue, &mut running, 1, 1), ["a1"]);
        *running.get_mut("b").unwrap() -= 1;
        assert_eq!(take(&mut queue, &mut running, 1, 1), ["b1"]);
        assert_eq!(queue.waiting("b"), 0);
    }

    #[test]
    fn tenants_take_turns_when_slots_are_plenty() {
        let mut queue = FairQueue::default();
        for i in 0..3 {
            queue.push_back(run(&format!("a{i}"), "a"));
        }
        queue.push_back(run("b0", "b"));
        let mut running = HashMap::new();
        assert_eq!(take(&mut queue, &mut running, 3, 10), ["a0", "b0", "a1"]);
        assert!(queue.remove("a2"));
        assert!(!queue.remove("a2"));
        assert!(queue.is_empty());
    }

    #[test]
    fn runs_no_node_can_run_leave_the_queue() {
        let mut queue = FairQueue::default();
        queue.push_back(run("x", "a"));
        queue.push_back(run("y", "a"));
        let (placed, never) = queue.take(&mut HashMap::new(), |_| 5, |_| Fit::<()>::Never);
        assert!(placed.is_empty());
        assert_eq!(never.len(), 2);
        assert!(queue.is_empty());
    }
}
