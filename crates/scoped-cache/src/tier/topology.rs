//! Which Redis the tier talks to: one server (`redis://`, `rediss://`, `redis+unix://`);
//! a Redis Cluster (`redis+cluster://host:port,host:port`, `rediss+cluster://` for TLS),
//! named by some of its nodes: the client discovers the rest, and follows `MOVED` and
//! `ASK` as slots move; or a primary Sentinel watches
//! (`redis+sentinel://host:port,host:port/service`, `rediss+sentinel://`), found
//! through the Sentinels, and found again when one of its calls meets an outage (after a
//! failover, the old primary refuses writes or is gone).
//!
//! Only primaries are read: a lookup reads the entry with the purge sequence and the
//! records that could cover it, and a replica behind its primary would answer with an
//! older sequence, which the tier must take for lost changes (and drop its memory).
//!
//! On a cluster every key of the tier carries its prefix as a hash tag (`{forum:}seq`), so
//! all of them live in one slot, on one primary at a time. That primary orders every
//! command on the tier's keys exactly as a single server does, which is what the purge
//! race guard, the journal's scripts and the lookup's single round trip rely on: the
//! guarantees carry over unchanged, and nothing is ever sent across slots (no
//! `CROSSSLOT`). The cost is that one tier's keys use one shard: run one prefix per
//! application, and the cluster's other shards serve others.

/// Where the tier's Redis is. Its `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server: the URL as given.
    Single(String),
    /// A cluster: a URL per seed node, each `redis://` or `rediss://`, with the
    /// credentials of the one given.
    Cluster(Vec<String>),
    /// The primary the Sentinels at `sentinels` (`host`, `port`) name for `service`.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        service: String,
        /// For the primary (the Sentinels are asked without).
        username: Option<String>,
        password: Option<String>,
        db: i64,
        tls: bool,
    },
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Single(_) => f.write_str("Single"),
            Topology::Cluster(nodes) => write!(f, "Cluster({} nodes)", nodes.len()),
            Topology::Sentinel {
                sentinels, service, ..
            } => write!(f, "Sentinel({} sentinels, {service:?})", sentinels.len()),
        }
    }
}

/// Why a URL names no usable topology. Never holds the URL: it may hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TopologyError {
    #[error("a cluster URL names no node (`redis+cluster://host:port,host:port`)")]
    NoNode,
    #[error("a cluster or Sentinel node is not `host:port`")]
    BadNode,
    #[error("a Sentinel URL names no service (`redis+sentinel://host:port/service`)")]
    NoService,
    #[error("a Sentinel URL's database is not a number from 0")]
    BadDatabase,
    #[error(
        "a cluster or Sentinel URL's credentials hold `/`, `?`, `#` or invalid UTF-8 (percent-encode them)"
    )]
    BadCredentials,
    #[error("a cluster or Sentinel URL holds whitespace")]
    Whitespace,
}

impl Topology {
    pub(crate) fn of(url: &str) -> Result<Self, TopologyError> {
        let several = [
            "redis+cluster://",
            "rediss+cluster://",
            "redis+sentinel://",
            "rediss+sentinel://",
        ];
        if several.iter().any(|scheme| url.starts_with(scheme))
            && url.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(TopologyError::Whitespace);
        }
        if let Some((tls, rest)) = url
            .strip_prefix("redis+sentinel://")
            .map(|rest| (false, rest))
            .or_else(|| {
                url.strip_prefix("rediss+sentinel://")
                    .map(|rest| (true, rest))
            })
        {
            return sentinel(tls, rest);
        }
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
            Some((credentials, _)) if credentials.contains(['/', '?', '#']) => {
                return Err(TopologyError::BadCredentials);
            }
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, rest),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        let mut nodes = Vec::new();
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            node(host)?;
            // (Kept as written: the client parses it, brackets and percent-encoding too.)
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
            Topology::Sentinel { tls, .. } => *tls,
        }
    }

    /// What every key and the channel start with: the prefix, as a hash tag on a
    /// cluster (one slot for all of them).
    pub(crate) fn key_prefix(&self, prefix: &str) -> String {
        match self {
            Topology::Single(_) | Topology::Sentinel { .. } => prefix.to_owned(),
            Topology::Cluster(_) => format!("{{{prefix}}}"),
        }
    }
}

/// `host:port` or `[ipv6]:port`, parsed (the host without brackets).
fn node(host: &str) -> Result<(String, u16), TopologyError> {
    let (name, port) = host.rsplit_once(':').ok_or(TopologyError::BadNode)?;
    let port = port.parse::<u16>().map_err(|_| TopologyError::BadNode)?;
    let name = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) if v6.contains(':') => v6,
        Some(_) => return Err(TopologyError::BadNode),
        None if name.contains([':', '[', ']']) => return Err(TopologyError::BadNode),
        None => name,
    };
    if name.is_empty() || name.contains(['/', '?', '#', '@']) || port == 0 {
        return Err(TopologyError::BadNode);
    }
    Ok((name.to_owned(), port))
}

/// Percent-decoded, as URLs carry a user or password holding `@`, `:` or `/`.
fn decoded(text: &str) -> Result<String, TopologyError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| TopologyError::BadCredentials)
}

/// `[user:password@]host:port,host:port/service[/db]`, after the scheme.
fn sentinel(tls: bool, rest: &str) -> Result<Topology, TopologyError> {
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, _)) if credentials.contains(['/', '?', '#']) => {
            return Err(TopologyError::BadCredentials);
        }
        Some((credentials, rest)) => (Some(credentials), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or(TopologyError::NoService)?;
    let (service, db) = match path.trim_end_matches('/').split_once('/') {
        Some((service, db)) => (
            service,
            db.parse::<u32>()
                .map(i64::from)
                .map_err(|_| TopologyError::BadDatabase)?,
        ),
        None => (path.trim_end_matches('/'), 0),
    };
    if service.is_empty() || service.contains(['?', '#']) {
        return Err(TopologyError::NoService);
    }
    let sentinels = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(node)
        .collect::<Result<Vec<_>, _>>()?;
    if sentinels.is_empty() {
        return Err(TopologyError::NoNode);
    }
    let (username, password) = match credentials {
        None => (None, None),
        Some(credentials) => match credentials.split_once(':') {
            Some((user, password)) => (
                Some(decoded(user)?).filter(|u| !u.is_empty()),
                Some(decoded(password)?),
            ),
            None => (Some(decoded(credentials)?), None),
        },
    };
    Ok(Topology::Sentinel {
        sentinels,
        service: service.to_owned(),
        username,
        password,
        db,
        tls,
    })
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
    fn a_sentinel_url_names_the_sentinels_the_service_and_the_primarys_credentials() {
        assert_eq!(
            Topology::of("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/forum/2").unwrap(),
            Topology::Sentinel {
                sentinels: vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26379)],
                service: "forum".into(),
                username: None,
                password: Some("pw".into()),
                db: 2,
                tls: false,
            }
        );
        for url in [
            "redis+sentinel://10.0.0.1:26379",
            "redis+sentinel://10.0.0.1:26379/",
            "redis+sentinel:///forum",
            "redis+sentinel://10.0.0.1/forum",
            "redis+sentinel://10.0.0.1:26379/forum/x",
            "redis+sentinel://10.0.0.1:26379/forum/-1",
            "redis+sentinel://10.0.0.1:26379/forum\n",
            "redis+cluster://u:12?x@h:7000",
            "redis+cluster://[::1:7000",
        ] {
            assert!(Topology::of(url).is_err(), "{url}");
        }
    }

    #[test]
    fn credentials_are_percent_decoded_and_ipv6_hosts_lose_their_brackets() {
        let Topology::Sentinel {
            sentinels,
            username,
            password,
            ..
        } = Topology::of("redis+sentinel://app:p%40ss%3Aword@[::1]:26379,10.0.0.2:26379/forum")
            .unwrap()
        else {
            panic!("a Sentinel topology");
        };
        assert_eq!(sentinels[0], ("::1".to_owned(), 26379));
        assert_eq!(username.as_deref(), Some("app"));
        assert_eq!(password.as_deref(), Some("p@ss:word"));
        let debug = format!(
            "{:?}",
            Topology::of("redis+sentinel://:secret@h:1/s").unwrap()
        );
        assert!(!debug.contains("secret"), "{debug}");
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
