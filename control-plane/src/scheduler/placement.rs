//! Where a new instance goes: best fit on free CPU and memory among the
//! ready nodes that run Docker, spreading an app's copies where it can.

/// A node that could take an instance, with what it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub free_cpu_millis: i64,
    pub free_memory_bytes: i64,
    /// Instances of the same app already there.
    pub same_app: usize,
}

/// The node to use, or why there is none.
pub fn best_fit(
    candidates: &[Candidate],
    cpu_millis: u32,
    memory_bytes: u64,
) -> Result<&Candidate, String> {
    let (cpu, memory) = (i64::from(cpu_millis), memory_bytes as i64);
    if candidates.is_empty() {
        return Err("no ready node with Docker".to_owned());
    }
    candidates
        .iter()
        .filter(|c| c.free_cpu_millis >= cpu && c.free_memory_bytes >= memory)
        .min_by(|a, b| {
            let left = |c: &Candidate| {
                // Fraction of the node left over after placing, CPU and memory alike.
                let cpu_left = (c.free_cpu_millis - cpu) as f64 / (c.free_cpu_millis.max(1)) as f64;
                let mem_left = (c.free_memory_bytes - memory) as f64 / (c.free_memory_bytes.max(1)) as f64;
                cpu_left + mem_left
            };
            a.same_app
                .cmp(&b.same_app)
                .then(left(a).total_cmp(&left(b)))
                .then(a.name.cmp(&b.name))
        })
        .ok_or_else(|| {
            format!(
                "no ready node has {cpu_millis}m CPU and {} MiB memory free ({} node(s) considered)",
                memory_bytes >> 20,
                candidates.len()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: i64, mem_mib: i64, same_app: usize) -> Candidate {
        Candidate {
            name: name.into(),
            free_cpu_millis: cpu,
            free_memory_bytes: mem_mib << 20,
            same_app,
        }
    }

    #[test]
    fn the_tightest_node_that_fits_wins() {
        let nodes = [
            node("big", 8000, 16384, 0),
            node("small", 1500, 1024, 0),
            node("tiny", 500, 256, 0),
        ];
        assert_eq!(best_fit(&nodes, 1000, 512 << 20).unwrap().name, "small");
        assert_eq!(best_fit(&nodes, 4000, 512 << 20).unwrap().name, "big");
    }

    #[test]
    fn copies_of_one_app_spread_before_they_pack() {
        let nodes = [node("a", 1500, 1024, 1), node("b", 8000, 16384, 0)];
        assert_eq!(best_fit(&nodes, 1000, 512 << 20).unwrap().name, "b");
    }

    #[test]
    fn nothing_fits_says_why() {
        let nodes = [node("a", 500, 256, 0)];
        let err = best_fit(&nodes, 1000, 512 << 20).unwrap_err();
        assert!(err.contains("1000m CPU and 512 MiB"), "{err}");
        assert_eq!(
            best_fit(&[], 1000, 1).unwrap_err(),
            "no ready node with Docker"
        );
    }
}
