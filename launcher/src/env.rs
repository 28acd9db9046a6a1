//! Which rank am I, and how many are we? Read from the launcher's environment, without MPI.
//!
//! Pure logic: [`detect`] takes any [`Env`] (the real one is [`ProcessEnv`]; tests pass a
//! slice of pairs) and returns a [`Launch`] or an [`EnvError`] naming the variables at fault.
//!
//! | launcher | rank | size | local rank / size | run id |
//! |---|---|---|---|---|
//! | `mpirun` (Open MPI) | `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE` | `OMPI_COMM_WORLD_LOCAL_RANK` / `_LOCAL_SIZE` | `PMIX_NAMESPACE`, `OMPI_MCA_ess_base_jobid` |
//! | `mpiexec` (MPICH Hydra), `srun --mpi=pmi2` | `PMI_RANK` | `PMI_SIZE` | `MPI_LOCALRANKID` / `MPI_LOCALNRANKS` | `PMI_JOBID`, `PMI_KVSNAME` |
//! | PMIx (`srun --mpi=pmix`, prterun) | `PMIX_RANK` | (from another source) | | `PMIX_NAMESPACE` |
//! | `srun` (a job step) | `SLURM_PROCID` | `SLURM_STEP_NUM_TASKS` | `SLURM_LOCALID` / from `SLURM_STEP_TASKS_PER_NODE` | `SLURM_JOB_ID`.`SLURM_STEP_ID` |
//!
//! Rules:
//! * The MPI launchers' variables come first: `mpirun` inside an allocation inherits the
//!   allocation's `SLURM_*` variables, and its ranks run inside the `srun` step of Open MPI's
//!   daemons, whose `SLURM_PROCID` is the daemon's, not the rank's. So Slurm's variables are
//!   cross-checked only when they describe the same processes (no `OMPI_COMM_WORLD_*`, and
//!   the step has as many tasks as the MPI size).
//! * `SLURM_PROCID` without a step (`SLURM_STEP_ID` unset, or `batch`/`extern`) is the batch
//!   script's own shell, not a launch: it is ignored.
//! * Every pair of sources that describe the same processes must agree; if not, the error
//!   names both variables and their values.
//! * A value that is not a decimal number, or a rank not below its size, is an error.
//! * No launcher at all is a job of one ([`LauncherKind::None`]); whether that is really
//!   meant (and not N copies started by the wrong launcher) is checked by
//!   [`Launch::expect_size`] and by the run directory's singleton check.

use std::fmt;

/// Where variables come from.
pub trait Env {
    /// The value of `name`, if set (and valid UTF-8).
    fn var(&self, name: &str) -> Option<String>;
}

/// The environment of this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for [(&str, &str)] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self[..].var(name)
    }
}

/// The launcher that started this process (the source of rank and size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LauncherKind {
    /// Open MPI's `mpirun`/`mpiexec` (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// A PMI-1/PMI-2 launcher: MPICH's Hydra `mpiexec`, or `srun --mpi=pmi2`.
    Pmi,
    /// A PMIx launcher that sets no other variable (size then comes from Slurm).
    Pmix,
    /// A Slurm job step started by `srun`.
    Slurm,
    /// No launcher: a job of one.
    None,
}

impl fmt::Display for LauncherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LauncherKind::OpenMpi => "Open MPI mpirun",
            LauncherKind::Pmi => "PMI (MPICH Hydra or srun --mpi=pmi2)",
            LauncherKind::Pmix => "PMIx",
            LauncherKind::Slurm => "Slurm srun",
            LauncherKind::None => "no launcher",
        })
    }
}

/// What the launcher told this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, `0..size`.
    pub rank: u32,
    /// The number of processes in the job (step).
    pub size: u32,
    /// Rank among the processes of this node, when the launcher says.
    pub local_rank: Option<u32>,
    /// Number of processes of this job on this node, when the launcher says.
    pub local_size: Option<u32>,
    /// The launcher the rank and size come from.
    pub kind: LauncherKind,
    /// Identifies this run (job and step): the same for every rank, different for every
    /// launch. `None` when the launcher gives nothing usable.
    pub run_id: Option<String>,
    /// The variables rank and size were read from, e.g. `OMPI_COMM_WORLD_RANK=1`, and the
    /// ones that were cross-checked against them: for logs.
    pub evidence: Vec<String>,
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rank {} of {} ({})", self.rank, self.size, self.kind)?;
        if let (Some(r), Some(s)) = (self.local_rank, self.local_size) {
            write!(f, ", local {r} of {s}")?;
        }
        if let Some(id) = &self.run_id {
            write!(f, ", run {id}")?;
        }
        if !self.evidence.is_empty() {
            write!(f, " [{}]", self.evidence.join(" "))?;
        }
        Ok(())
    }
}

/// Why the environment does not give a usable rank and size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A variable that must be a decimal number is not.
    #[error("launcher variable {name}={value:?} is not a decimal number")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A rank variable is set but its size variable is not (or the reverse).
    #[error("launcher variable {present} is set but {missing} is not")]
    Incomplete {
        /// The variable that is set.
        present: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
    /// A size of zero, or a rank not below the size.
    #[error("launcher says rank {rank} of {size} ({rank_var}, {size_var}): rank must be below size, size above 0")]
    OutOfRange {
        /// The rank.
        rank: u32,
        /// The size.
        size: u32,
        /// Where the rank comes from.
        rank_var: &'static str,
        /// Where the size comes from.
        size_var: &'static str,
    },
    /// Two sources that describe the same processes disagree.
    #[error("launcher variables disagree: {a} but {b}")]
    Disagree {
        /// One, as `NAME=value`.
        a: String,
        /// The other, as `NAME=value`.
        b: String,
    },
    /// `SLURM_STEP_TASKS_PER_NODE` cannot be read.
    #[error("launcher variable SLURM_STEP_TASKS_PER_NODE={0:?} is malformed (expected e.g. \"2(x3),1\")")]
    TasksPerNode(String),
    /// The job has another size than the caller expects: typically N copies started by the
    /// wrong launcher (or an MPI binary under another MPI's launcher), each rank 0 of 1.
    #[error("this process is rank {rank} of {size} ({kind}{evidence}) but {expected} ranks were expected: started by the wrong launcher, or with the wrong srun --mpi= option?")]
    UnexpectedSize {
        /// The rank found.
        rank: u32,
        /// The size found.
        size: u32,
        /// The size expected.
        expected: u32,
        /// The launcher found.
        kind: LauncherKind,
        /// The variables, `", from A=.. B=.."` or empty.
        evidence: String,
    },
}

/// One rank/size reading.
#[derive(Debug, Clone)]
struct Reading {
    rank: u32,
    size: Option<u32>,
    rank_var: &'static str,
    size_var: &'static str,
}

impl Reading {
    fn rank_ev(&self) -> String {
        format!("{}={}", self.rank_var, self.rank)
    }
    fn size_ev(&self) -> Option<String> {
        self.size.map(|s| format!("{}={s}", self.size_var))
    }
}

fn num(env: &(impl Env + ?Sized), name: &'static str) -> Result<Option<u32>, EnvError> {
    match env.var(name) {
        None => Ok(None),
        Some(v) => {
            let t = v.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(EnvError::NotANumber { name, value: v });
            }
            t.parse::<u32>()
                .map(Some)
                .map_err(|_| EnvError::NotANumber { name, value: v })
        }
    }
}

fn pair(
    env: &(impl Env + ?Sized),
    rank_var: &'static str,
    size_var: &'static str,
) -> Result<Option<Reading>, EnvError> {
    let rank = num(env, rank_var)?;
    let size = num(env, size_var)?;
    match (rank, size) {
        (None, None) => Ok(None),
        (Some(rank), Some(size)) => {
            if size == 0 || rank >= size {
                return Err(EnvError::OutOfRange {
                    rank,
                    size,
                    rank_var,
                    size_var,
                });
            }
            Ok(Some(Reading {
                rank,
                size: Some(size),
                rank_var,
                size_var,
            }))
        }
        (Some(_), None) => Err(EnvError::Incomplete {
            present: rank_var,
            missing: size_var,
        }),
        (None, Some(_)) => Err(EnvError::Incomplete {
            present: size_var,
            missing: rank_var,
        }),
    }
}

fn agree(a: &Reading, b: &Reading) -> Result<(), EnvError> {
    if a.rank != b.rank {
        return Err(EnvError::Disagree {
            a: a.rank_ev(),
            b: b.rank_ev(),
        });
    }
    if let (Some(sa), Some(sb)) = (a.size, b.size) {
        if sa != sb {
            return Err(EnvError::Disagree {
                a: format!("{}={sa}", a.size_var),
                b: format!("{}={sb}", b.size_var),
            });
        }
    }
    Ok(())
}

/// Parses Slurm's compressed tasks-per-node list (`"2(x3),1"` = 2,2,2,1) and returns the
/// count of node `node` (0-based), or `None` if `node` is past the list.
pub fn tasks_on_node(list: &str, node: u32) -> Result<Option<u32>, EnvError> {
    let bad = || EnvError::TasksPerNode(list.to_string());
    let mut items = Vec::new();
    for item in list.trim().split(',') {
        let (count, repeat) = match item.split_once("(x") {
            Some((c, r)) => {
                let r = r.strip_suffix(')').ok_or_else(bad)?;
                (c, r)
            }
            None => (item, "1"),
        };
        let count: u32 = parse_digits(count).ok_or_else(bad)?;
        let repeat: u32 = parse_digits(repeat).ok_or_else(bad)?;
        if repeat == 0 {
            return Err(bad());
        }
        items.push((count, repeat));
    }
    let mut index: u64 = 0;
    for (count, repeat) in items {
        if u64::from(node) < index + u64::from(repeat) {
            return Ok(Some(count));
        }
        index += u64::from(repeat);
    }
    Ok(None)
}

fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Reads rank, size, local rank and run id from `env`, cross-checking every source (see the
/// module doc).
pub fn detect(env: &(impl Env + ?Sized)) -> Result<Launch, EnvError> {
    let ompi = pair(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")?;
    let pmi = pair(env, "PMI_RANK", "PMI_SIZE")?;
    let pmix = num(env, "PMIX_RANK")?.map(|rank| Reading {
        rank,
        size: None,
        rank_var: "PMIX_RANK",
        size_var: "",
    });
    // A Slurm step: SLURM_PROCID with a real step id. The batch script (step "batch") and
    // the extern step are not launches of this program.
    let step_id = env.var("SLURM_STEP_ID").or_else(|| env.var("SLURM_STEPID"));
    let in_step = matches!(&step_id, Some(s) if s.trim().bytes().all(|b| b.is_ascii_digit()) && !s.trim().is_empty());
    let slurm = if in_step {
        let size_var = if env.var("SLURM_STEP_NUM_TASKS").is_some() {
            "SLURM_STEP_NUM_TASKS"
        } else {
            "SLURM_NTASKS"
        };
        pair(env, "SLURM_PROCID", size_var)?
    } else {
        None
    };

    let mut evidence = Vec::new();
    let (primary, kind) = if let Some(o) = &ompi {
        if let Some(p) = &pmix {
            agree(o, p)?;
            evidence.push(p.rank_ev());
        }
        if let Some(p) = &pmi {
            agree(o, p)?;
            evidence.push(p.rank_ev());
        }
        // Slurm variables under mpirun describe Open MPI's daemons: not checked.
        (o.clone(), LauncherKind::OpenMpi)
    } else if let Some(p) = &pmi {
        if let Some(x) = &pmix {
            agree(p, x)?;
            evidence.push(x.rank_ev());
        }
        if let Some(s) = &slurm {
            // srun --mpi=pmi2 sets both for the same processes; Hydra under Slurm runs its
            // proxies as a step with one task per node, so a size mismatch means "nested".
            if s.size == p.size {
                agree(p, s)?;
                evidence.push(s.rank_ev());
            }
        }
        (p.clone(), LauncherKind::Pmi)
    } else if let Some(x) = &pmix {
        match &slurm {
            Some(s) => {
                agree(s, x)?;
                evidence.push(x.rank_ev());
                (s.clone(), LauncherKind::Slurm)
            }
            None => {
                return Err(EnvError::Incomplete {
                    present: "PMIX_RANK",
                    missing: "OMPI_COMM_WORLD_SIZE or SLURM_STEP_NUM_TASKS",
                })
            }
        }
    } else if let Some(s) = &slurm {
        (s.clone(), LauncherKind::Slurm)
    } else {
        return Ok(Launch {
            rank: 0,
            size: 1,
            local_rank: None,
            local_size: None,
            kind: LauncherKind::None,
            run_id: None,
            evidence,
        });
    };
    let size = primary.size.unwrap_or(1);
    let mut ev = vec![primary.rank_ev()];
    ev.extend(primary.size_ev());
    ev.append(&mut evidence);

    let (local_rank, local_size) = match kind {
        LauncherKind::OpenMpi => (
            num(env, "OMPI_COMM_WORLD_LOCAL_RANK")?,
            num(env, "OMPI_COMM_WORLD_LOCAL_SIZE")?,
        ),
        LauncherKind::Pmi => (num(env, "MPI_LOCALRANKID")?, num(env, "MPI_LOCALNRANKS")?),
        _ => {
            let local = num(env, "SLURM_LOCALID")?;
            let node = num(env, "SLURM_NODEID")?;
            let per_node = match (env.var("SLURM_STEP_TASKS_PER_NODE"), node) {
                (Some(list), Some(node)) => tasks_on_node(&list, node)?,
                _ => None,
            };
            (local, per_node)
        }
    };
    let (local_rank, local_size) = match (local_rank, local_size) {
        (Some(r), Some(s)) if r < s => (Some(r), Some(s)),
        (r, None) => (r, None),
        // An inconsistent local pair is not worth refusing to start; drop the size.
        (r, Some(_)) => (r, None),
    };

    let run_id = match kind {
        LauncherKind::OpenMpi => env
            .var("PMIX_NAMESPACE")
            .or_else(|| env.var("OMPI_MCA_ess_base_jobid"))
            .or_else(|| env.var("OMPI_MCA_orte_ess_jobid"))
            .map(|v| format!("ompi:{v}")),
        LauncherKind::Pmi => match (env.var("SLURM_JOB_ID"), step_id.clone(), in_step) {
            (Some(j), Some(s), true) if slurm.as_ref().map(|s| s.size) == Some(primary.size) => {
                Some(format!("slurm:{j}.{s}"))
            }
            _ => env
                .var("PMI_JOBID")
                .or_else(|| env.var("PMI_KVSNAME"))
                .map(|v| format!("pmi:{v}")),
        },
        _ => match (env.var("SLURM_JOB_ID"), step_id) {
            (Some(j), Some(s)) => Some(format!("slurm:{j}.{s}")),
            _ => env.var("PMIX_NAMESPACE").map(|v| format!("pmix:{v}")),
        },
    };

    Ok(Launch {
        rank: primary.rank,
        size,
        local_rank,
        local_size,
        kind,
        run_id,
        evidence: ev,
    })
}

impl Launch {
    /// Refuses a job whose size is not `expected` (`--expect-ranks N`).
    pub fn expect_size(&self, expected: u32) -> Result<(), EnvError> {
        if self.size == expected {
            return Ok(());
        }
        let evidence = if self.evidence.is_empty() {
            String::new()
        } else {
            format!(", from {}", self.evidence.join(" "))
        };
        Err(EnvError::UnexpectedSize {
            rank: self.rank,
            size: self.size,
            expected,
            kind: self.kind,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_launcher_is_a_job_of_one() {
        let l = detect(&[("HOME", "/root")]).unwrap();
        assert_eq!((l.rank, l.size, l.kind), (0, 1, LauncherKind::None));
        assert_eq!(l.run_id, None);
    }

    #[test]
    fn open_mpi_rank_size_local_and_run_id() {
        let env = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("PMIX_RANK", "1"),
            ("PMIX_NAMESPACE", "prterun-vm-123@1"),
        ];
        let l = detect(&env).unwrap();
        assert_eq!((l.rank, l.size, l.kind), (1, 2, LauncherKind::OpenMpi));
        assert_eq!((l.local_rank, l.local_size), (Some(1), Some(2)));
        assert_eq!(l.run_id.as_deref(), Some("ompi:prterun-vm-123@1"));
        assert!(l.to_string().contains("OMPI_COMM_WORLD_RANK=1"), "{l}");
    }

    #[test]
    fn mpirun_inside_an_allocation_ignores_the_daemons_slurm_variables() {
        let env = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_STEP_NUM_TASKS", "1"),
            ("SLURM_JOB_ID", "7"),
        ];
        let l = detect(&env).unwrap();
        assert_eq!((l.rank, l.size), (1, 2));
    }

    #[test]
    fn ompi_and_pmix_ranks_that_disagree_name_both() {
        let env = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("PMIX_RANK", "0"),
        ];
        let e = detect(&env).unwrap_err();
        assert_eq!(
            e,
            EnvError::Disagree {
                a: "OMPI_COMM_WORLD_RANK=1".into(),
                b: "PMIX_RANK=0".into()
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("OMPI_COMM_WORLD_RANK=1") && msg.contains("PMIX_RANK=0"));
    }

    #[test]
    fn srun_step_rank_size_local_size_and_run_id() {
        let env = [
            ("SLURM_PROCID", "3"),
            ("SLURM_STEP_NUM_TASKS", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_STEP_ID", "2"),
            ("SLURM_JOB_ID", "41"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODEID", "1"),
            ("SLURM_STEP_TASKS_PER_NODE", "3,2"),
        ];
        let l = detect(&env).unwrap();
        assert_eq!((l.rank, l.size, l.kind), (3, 5, LauncherKind::Slurm));
        assert_eq!((l.local_rank, l.local_size), (Some(0), Some(2)));
        assert_eq!(l.run_id.as_deref(), Some("slurm:41.2"));
    }

    #[test]
    fn the_batch_script_is_not_a_launch() {
        let env = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_ID", "41"),
        ];
        let l = detect(&env).unwrap();
        assert_eq!((l.rank, l.size, l.kind), (0, 1, LauncherKind::None));
        let env = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_STEP_ID", "batch"),
        ];
        assert_eq!(detect(&env).unwrap().kind, LauncherKind::None);
    }

    #[test]
    fn srun_pmix_checks_pmix_rank_against_slurm() {
        let env = [
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_STEP_ID", "0"),
            ("PMIX_RANK", "0"),
        ];
        let e = detect(&env).unwrap_err();
        assert!(matches!(e, EnvError::Disagree { .. }), "{e}");
        let env = [
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_STEP_ID", "0"),
            ("PMIX_RANK", "1"),
        ];
        assert_eq!(detect(&env).unwrap().rank, 1);
    }

    #[test]
    fn pmix_alone_has_no_size() {
        let e = detect(&[("PMIX_RANK", "0")]).unwrap_err();
        assert!(matches!(
            e,
            EnvError::Incomplete {
                present: "PMIX_RANK",
                ..
            }
        ));
    }

    #[test]
    fn srun_pmi2_checks_pmi_against_slurm_and_hydra_under_slurm_does_not() {
        let same = [
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_STEP_ID", "0"),
        ];
        assert!(matches!(
            detect(&same).unwrap_err(),
            EnvError::Disagree { .. }
        ));
        let nested = [
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "1"),
            ("SLURM_STEP_ID", "0"),
            ("PMI_JOBID", "kvs_77_0"),
        ];
        let l = detect(&nested).unwrap();
        assert_eq!((l.rank, l.size, l.kind), (1, 2, LauncherKind::Pmi));
        assert_eq!(l.run_id.as_deref(), Some("pmi:kvs_77_0"));
    }

    #[test]
    fn bad_numbers_and_ranges_are_refused_with_the_variable() {
        let e = detect(&[("PMI_RANK", "one"), ("PMI_SIZE", "2")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "launcher variable PMI_RANK=\"one\" is not a decimal number"
        );
        let e = detect(&[("PMI_RANK", "-1"), ("PMI_SIZE", "2")]).unwrap_err();
        assert!(matches!(e, EnvError::NotANumber { .. }));
        let e = detect(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")]).unwrap_err();
        assert!(matches!(e, EnvError::OutOfRange { .. }));
        let e = detect(&[("PMI_RANK", "0"), ("PMI_SIZE", "0")]).unwrap_err();
        assert!(matches!(e, EnvError::OutOfRange { .. }));
        let e = detect(&[("PMI_RANK", "0")]).unwrap_err();
        assert!(matches!(e, EnvError::Incomplete { .. }));
        let e = detect(&[("OMPI_COMM_WORLD_SIZE", "99999999999")]).unwrap_err();
        assert!(matches!(e, EnvError::NotANumber { .. }));
    }

    #[test]
    fn expect_size_refuses_silent_singletons() {
        let l = detect(&[("HOME", "/")]).unwrap();
        let e = l.expect_size(2).unwrap_err();
        assert!(
            e.to_string().contains("rank 0 of 1") && e.to_string().contains("2 ranks"),
            "{e}"
        );
        assert!(l.expect_size(1).is_ok());
    }

    #[test]
    fn tasks_per_node_lists() {
        assert_eq!(tasks_on_node("2(x3),1", 0).unwrap(), Some(2));
        assert_eq!(tasks_on_node("2(x3),1", 2).unwrap(), Some(2));
        assert_eq!(tasks_on_node("2(x3),1", 3).unwrap(), Some(1));
        assert_eq!(tasks_on_node("2(x3),1", 4).unwrap(), None);
        assert_eq!(tasks_on_node("4", 0).unwrap(), Some(4));
        for bad in ["", "x", "2(x", "2(x0)", "2(3)", "-1", "2,,1"] {
            assert!(tasks_on_node(bad, 0).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn detect_never_panics(vals in proptest::collection::vec(".{0,12}", 12)) {
            let names = ["OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
                "PMIX_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID",
                "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_TASKS_PER_NODE", "MPI_LOCALRANKID"];
            let env: Vec<(&str, &str)> = names.iter().copied().zip(vals.iter().map(|s| s.as_str())).collect();
            if let Ok(l) = detect(&env[..]) {
                prop_assert!(l.rank < l.size);
            }
        }

        #[test]
        fn tasks_on_node_never_panics(s in "[0-9x(),]{0,20}", n in 0u32..10) {
            let _ = tasks_on_node(&s, n);
        }
    }
}
