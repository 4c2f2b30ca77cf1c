//! The newest sequence number of each of an account's two sources: ingest moves
//! them, and checkpoints and backlogs are measured against them.

use super::{keys, SledStore as Store, StoreError};
use crate::model::AccountId;

/// The newest sequence numbers of an account: checkpoints are compared with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heads {
    /// The newest audit sequence (0: none yet).
    pub audit: u64,
    /// The newest job change sequence (0: none yet).
    pub jobs: u64,
}

impl Heads {
    fn from_bytes(b: &[u8]) -> Heads {
        Heads {
            audit: keys::seq_of(&b[..8.min(b.len())]),
            jobs: keys::seq_of(b),
        }
    }
    pub(super) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.audit.to_be_bytes());
        b[8..].copy_from_slice(&self.jobs.to_be_bytes());
        b
    }
}

pub(super) fn heads_in(tree: &sled::Tree, account: &AccountId) -> Result<Heads, StoreError> {
    Ok(tree
        .get(keys::account_prefix(keys::HEADS, account))?
        .map(|b| Heads::from_bytes(&b))
        .unwrap_or_default())
}

impl Store {
    /// The account's newest audit and job change sequences.
    pub fn heads(&self, account: &AccountId) -> Result<Heads, StoreError> {
        heads_in(&*self.events()?, account)
    }
}
