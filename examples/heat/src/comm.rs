//! The ranks of the simulation: MPI (feature `mpi`) or a single process.

/// What the simulation needs from its ranks.
pub trait Comm {
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Sends `first` to the rank above and `last` to the rank below; fills `above` with the
    /// last row of the rank above and `below` with the first row of the rank below (left
    /// untouched at the grid's edges).
    fn exchange(&self, first: &[f64], last: &[f64], above: &mut [f64], below: &mut [f64]);
    /// Waits for every rank.
    fn barrier(&self);
}

/// One rank, no halo exchange.
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn exchange(&self, _: &[f64], _: &[f64], _: &mut [f64], _: &mut [f64]) {}
    fn barrier(&self) {}
}

/// MPI ranks (MPI_COMM_WORLD); halos through blocking point-to-point messages.
#[cfg(feature = "mpi")]
pub struct Mpi {
    /// Keeps MPI initialised; finalised on drop.
    pub _universe: mpi::environment::Universe,
    /// MPI_COMM_WORLD.
    pub world: mpi::topology::SimpleCommunicator,
}

#[cfg(feature = "mpi")]
impl Comm for Mpi {
    fn rank(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.size() as usize
    }
    fn exchange(&self, first: &[f64], last: &[f64], above: &mut [f64], below: &mut [f64]) {
        use mpi::traits::{Communicator, Destination, Source};
        let (r, n) = (self.world.rank(), self.world.size());
        // Downwards chain (rank 0 starts): last row to r+1, r-1's last row into `above`.
        if r > 0 {
            self.world.process_at_rank(r - 1).receive_into(above);
        }
        if r + 1 < n {
            self.world.process_at_rank(r + 1).send(last);
        }
        // Upwards chain (rank n-1 starts).
        if r + 1 < n {
            self.world.process_at_rank(r + 1).receive_into(below);
        }
        if r > 0 {
            self.world.process_at_rank(r - 1).send(first);
        }
    }
    fn barrier(&self) {
        use mpi::traits::CommunicatorCollectives;
        self.world.barrier();
    }
}
