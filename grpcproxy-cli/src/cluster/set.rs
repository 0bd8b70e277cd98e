//! The endpoints of a cluster at one moment, and the next set when DNS answers differently.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::endpoint::{Endpoint, EndpointFactory};

/// The endpoints of a cluster at one moment.
#[derive(Debug, Default)]
pub(super) struct EndpointSet {
    pub(super) list: Vec<Arc<Endpoint>>,
    by_address: HashMap<SocketAddr, usize>,
}

impl EndpointSet {
    /// The endpoint whose upstream has `address`. A call reports the very string its
    /// endpoint's upstream holds, so a small set is searched by pointer, without parsing
    /// or hashing the address on every call.
    pub(super) fn find(&self, address: &str) -> Option<&Arc<Endpoint>> {
        const SCANNED: usize = 16;
        if self.list.len() <= SCANNED {
            let same = |e: &&Arc<Endpoint>| std::ptr::eq(e.upstream.address(), address);
            if let Some(endpoint) = self.list.iter().find(same) {
                return Some(endpoint);
            }
        }
        let address: SocketAddr = address.parse().ok()?;
        self.by_address.get(&address).map(|&i| &self.list[i])
    }

    /// The set for `resolved` addresses (each with the host it was resolved from), keeping
    /// the endpoints (connections, health) of addresses already here; `None` when it is
    /// this set.
    pub(super) fn next(
        &self,
        resolved: Vec<(SocketAddr, String)>,
        factory: &EndpointFactory,
    ) -> anyhow::Result<Option<EndpointSet>> {
        let mut list = Vec::with_capacity(resolved.len());
        let mut by_address = HashMap::new();
        for (address, host) in resolved {
            if by_address.contains_key(&address) {
                continue;
            }
            let endpoint = match self.by_address.get(&address) {
                Some(&i) => self.list[i].clone(),
                None => Arc::new(factory.make(address, &host)?),
            };
            by_address.insert(address, list.len());
            list.push(endpoint);
        }
        let changed = list.len() != self.list.len()
            || list.iter().zip(&self.list).any(|(a, b)| !Arc::ptr_eq(a, b));
        Ok(changed.then_some(EndpointSet { list, by_address }))
    }
}
