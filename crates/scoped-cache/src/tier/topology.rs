//! Which Redis the tier talks to: one server (`redis://`, `rediss://`, `redis+unix://`),
//! or a Redis Cluster (`redis+cluster://host:port,host:port`, `rediss+cluster://` for
//! TLS), named by some of its nodes: the client discovers the rest, and follows `MOVED`
//! and `ASK` as slots move.
//!
//! On a cluster every key of the tier carries its prefix as a hash tag (`{forum:}seq`), so
//! all of them live in one slot, on one primary at a time. That primary orders every
//! command on the tier's keys exactly as a single server does, which is what the purge
//! race guard, the journal's scripts and the lookup's single round trip rely on: the
//! guarantees carry over unchanged, and nothing is ever sent across slots (no
//! `CROSSSLOT`). The cost is that one tier's keys use one shard: run one prefix per
//! application, and the cluster's other shards serve others.

/// Where the tier's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server: the URL as given.
    Single(String),
    /// A cluster: a URL per seed node, each `redis://` or `rediss://`, with the
    /// credentials of the one given.
    Cluster(Vec<String>),
}

/// Why a URL names no usable topology. Never holds the URL: it may hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TopologyError {
    #[error("a cluster URL names no node (`redis+cluster://host:port,host:port`)")]
    NoNode,
    #[error("a cluster node is not `host:port`")]
    BadNode,
}

impl Topology {
    pub(crate) fn of(url: &str) -> Result<Self, TopologyError> {
        let (scheme, rest) = match (
            url.strip_prefix("redis+cluster://"),
            url.strip_prefix("rediss+cluster://"),
        ) {
            (Some(rest), _) => ("redis", rest),
            (_, Some(rest)) => ("rediss", rest),
            _ => return Ok(Topology::Single(url.to_owned())),
        };
        // `user:password@` belongs to every node; a path or query is not allowed.
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, rest),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        let mut nodes = Vec::new();
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            let valid = host.rsplit_once(':').is_some_and(|(name, port)| {
                !name.is_empty()
                    && !name.contains(['/', '?', '#', '@'])
                    && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !valid {
                return Err(TopologyError::BadNode);
            }
            nodes.push(match credentials {
                Some(credentials) => format!("{scheme}://{credentials}@{host}"),
                None => format!("{scheme}://{host}"),
            });
        }
        if nodes.is_empty() {
            return Err(TopologyError::NoNode);
        }
        Ok(Topology::Cluster(nodes))
    }

    /// Whether it is reached over TLS.
    pub(crate) fn tls(&self) -> bool {
        match self {
            Topology::Single(url) => url.starts_with("rediss:"),
            Topology::Cluster(nodes) => nodes.iter().all(|n| n.starts_with("rediss:")),
        }
    }

    /// What every key and the channel start with: the prefix, as a hash tag on a
    /// cluster (one slot for all of them).
    pub(crate) fn key_prefix(&self, prefix: &str) -> String {
        match self {
            Topology::Single(_) => prefix.to_owned(),
            Topology::Cluster(_) => format!("{{{prefix}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seed_nodes_with_its_credentials() {
        assert_eq!(
            Topology::of("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/").unwrap(),
            Topology::Cluster(vec![
                "redis://u:p@10.0.0.1:7000".into(),
                "redis://u:p@10.0.0.2:7001".into(),
            ])
        );
        let tls = Topology::of("rediss+cluster://cache.internal:6380").unwrap();
        assert!(tls.tls());
        assert_eq!(tls.key_prefix("forum:"), "{forum:}");
        let single = Topology::of("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!(single, Topology::Single("redis://127.0.0.1:6379/2".into()));
        assert_eq!(single.key_prefix("forum:"), "forum:");
    }

    #[test]
    fn a_cluster_url_without_usable_nodes_is_refused() {
        for url in [
            "redis+cluster://",
            "redis+cluster://,",
            "redis+cluster://host",
            "redis+cluster://host:0",
            "redis+cluster://host:7000/0",
            "redis+cluster://host:7000?x=1",
            "redis+cluster://:7000",
        ] {
            assert!(Topology::of(url).is_err(), "{url}");
        }
    }
}
