//! The hwloc backend of [`crate::pin`] (cargo feature `hwloc`): the topology (which CPUs
//! share a core) and thread binding through the system libhwloc, via `hwlocality`.
//!
//! hwloc's topology lists every CPU of the machine even under `taskset`/`srun --cpu-bind`
//! (its "allowed" set is the cgroup's), so the process binding (`hwloc_get_cpubind`, the
//! launcher's mask) is read and only its CPUs are used.

use std::sync::OnceLock;

use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::object::types::ObjectType;
use hwlocality::Topology;

use crate::pin::{Cpu, PinError};

fn topology() -> Result<&'static Topology, PinError> {
    static TOPO: OnceLock<Result<Topology, String>> = OnceLock::new();
    TOPO.get_or_init(|| Topology::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| PinError::Hwloc(format!("cannot load the topology: {e}")))
}

/// This process's CPUs (hwloc process binding) with their cores (hwloc Core objects).
pub(crate) fn allowed_cpus() -> Result<Vec<Cpu>, PinError> {
    let topo = topology()?;
    let bound = topo
        .cpu_binding(CpuBindingFlags::PROCESS)
        .map_err(|e| PinError::Hwloc(format!("hwloc_get_cpubind(PROCESS) failed: {e}")))?;
    let mut out = Vec::new();
    for pu in topo.objects_with_type(ObjectType::PU) {
        let Some(id) = pu.os_index() else { continue };
        if !bound.is_set(id) {
            continue;
        }
        let core = pu
            .first_ancestor_with_type(ObjectType::Core)
            .map(|c| c.logical_index() as u32)
            .unwrap_or(u32::MAX);
        let package = pu
            .first_ancestor_with_type(ObjectType::Package)
            .map(|p| p.logical_index() as u32)
            .unwrap_or(0);
        out.push(Cpu {
            id: id as u32,
            core: (package, core),
        });
    }
    Ok(out)
}

/// Binds the calling thread to `cpu` with `hwloc_set_cpubind(THREAD)`.
pub(crate) fn bind_thread(cpu: u32) -> Result<(), PinError> {
    let topo = topology()?;
    let mut set = CpuSet::new();
    set.set(cpu as usize);
    topo.bind_cpu(&set, CpuBindingFlags::THREAD)
        .map_err(|e| PinError::Hwloc(format!("hwloc_set_cpubind(THREAD, cpu {cpu}) failed: {e}")))
}
