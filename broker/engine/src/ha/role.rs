//! A broker's role: master, or slave of which master, in which controller epoch. The loop that
//! takes it from the controller is the binary's (`cluster::controller`).

/// What a broker is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleKind {
    /// Accepts writes; slaves replicate from it.
    Master,
    /// Read-only; replicates from `master` (its endpoint) when known.
    Slave {
        /// The master's endpoint; `None` until the controller (or the nameservers) say.
        master: Option<String>,
    },
}

/// A broker's role and the controller epoch it holds it in (0 without a controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Master or slave.
    pub kind: RoleKind,
    /// Controller epoch.
    pub epoch: u64,
}

impl Role {
    /// True for a master.
    pub fn is_master(&self) -> bool {
        self.kind == RoleKind::Master
    }

    /// A slave's master endpoint, when known.
    pub fn master(&self) -> Option<&str> {
        match &self.kind {
            RoleKind::Slave { master } => master.as_deref(),
            RoleKind::Master => None,
        }
    }
}
