//! Which accounts siemsync knows: the administrator's account picker lists them, and
//! "no such account" (a typo) is told apart from "the feature is off".

use super::registry::Account;
use super::tokens::AccountToken;
use super::{decode, keys, SledStore as Store, StoreError};
use crate::model::AccountId;
use std::collections::BTreeMap;

/// An account siemsync has heard of: its feature switch (if it was ever set) and how
/// many integrations it has.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownAccount {
    /// The account.
    pub id: AccountId,
    /// Its feature switch, if it was ever set.
    pub record: Option<Account>,
    /// How many integrations it has.
    pub integrations: usize,
}

/// The account named in a key `{prefix}{account}` or `{prefix}{account}\0…`.
fn account_in(key: &[u8], prefix: &[u8]) -> Option<AccountId> {
    let rest = key.strip_prefix(prefix)?;
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    AccountId::parse(std::str::from_utf8(&rest[..end]).ok()?).ok()
}

impl Store {
    /// Every account with a feature switch, an integration, an account token or
    /// stored events, sorted by name.
    pub fn known_accounts(&self) -> Result<Vec<KnownAccount>, StoreError> {
        let mut known: BTreeMap<AccountId, KnownAccount> = BTreeMap::new();
        fn entry(
            known: &mut BTreeMap<AccountId, KnownAccount>,
            id: AccountId,
        ) -> &mut KnownAccount {
            known.entry(id.clone()).or_insert(KnownAccount {
                id,
                record: None,
                integrations: 0,
            })
        }
        let registry = self.registry()?;
        for kv in registry.scan_prefix(keys::ACCOUNTS) {
            let (k, v) = kv?;
            if let Some(id) = account_in(&k, keys::ACCOUNTS) {
                entry(&mut known, id).record = Some(decode(&k, &v)?);
            }
        }
        // Counted by key: an integration's token need not be opened to count it.
        for k in registry.scan_prefix(keys::INTEGRATIONS).keys() {
            if let Some(id) = account_in(&k?, keys::INTEGRATIONS) {
                entry(&mut known, id).integrations += 1;
            }
        }
        for kv in registry.scan_prefix(keys::TOKENS) {
            let (k, v) = kv?;
            let token: AccountToken = decode(&k, &v)?;
            entry(&mut known, token.account);
        }
        for id in self.accounts_with_events()? {
            entry(&mut known, id);
        }
        Ok(known.into_values().collect())
    }

    /// Whether siemsync has heard of the account at all (see `known_accounts`).
    pub fn knows_account(&self, id: &AccountId) -> Result<bool, StoreError> {
        let registry = self.registry()?;
        Ok(registry.get(keys::account(id))?.is_some()
            || registry
                .scan_prefix(keys::account_integrations(id))
                .next()
                .is_some()
            || !self.tokens_of(id)?.is_empty()
            || self.accounts_with_events()?.contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_read_from_either_key_form() {
        assert_eq!(
            account_in(b"acct/acme", keys::ACCOUNTS),
            AccountId::parse("acme").ok()
        );
        assert_eq!(
            account_in(b"int/acme\0c0ffee", keys::INTEGRATIONS),
            AccountId::parse("acme").ok()
        );
        assert_eq!(account_in(b"int/\0x", keys::INTEGRATIONS), None);
        assert_eq!(account_in(b"cp/x", keys::INTEGRATIONS), None);
    }
}
