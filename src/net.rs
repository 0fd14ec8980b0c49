//! Where the gateway may fetch from on an agent's behalf. A media URL reaches public addresses
//! only (never loopback, private, link-local, shared or multicast ones) unless
//! `policies.media.private_hosts` allows them: an agent, or a model led astray by a customer,
//! must not make the gateway fetch a file from inside its network and send it to a customer. The
//! check runs on every address a name resolves to, at connect time, and on every redirect.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The most redirects a media download follows.
const MAX_REDIRECTS: usize = 5;

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    let this_network = a == 0;
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || shared
        || this_network)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

/// The non-public address `url` names literally (`http://10.0.0.5/…`), if it does.
pub fn private_literal(url: &url::Url) -> Option<IpAddr> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    (!is_public(ip)).then_some(ip)
}

/// A download refused because its host (a name, or an address literal in a redirect) reaches no
/// public address: the client's error for it, which a caller finds in the error's sources.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} is not a public address; set policies.media.private_hosts: true to download from \
     inside the network"
)]
pub struct NotPublic(pub String);

/// The refusal among `err`'s sources, if the client refused the host for not being public.
pub fn not_public<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e NotPublic> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<NotPublic>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

/// Resolves names to their public addresses only; a name with none is refused ([`NotPublic`]).
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(NotPublic(host).into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The client media files are downloaded with: `timeout` per download, at most five redirects,
/// and public addresses only unless `private_hosts`.
pub fn media_client(timeout: Duration, private_hosts: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("wa-gateway/", env!("CARGO_PKG_VERSION")));
    let builder = if private_hosts {
        builder.redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
    } else {
        builder
            .dns_resolver(Arc::new(PublicOnly))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if let Some(ip) = private_literal(attempt.url()) {
                    attempt.error(NotPublic(ip.to_string()))
                } else {
                    attempt.follow()
                }
            }))
    };
    builder.build().expect("the TLS backend is compiled in")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_public_internet_is_public() {
        for (ip, public) in [
            ("8.8.8.8", true),
            ("157.240.1.35", true),
            ("2a03:2880:f12f::1", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("224.0.0.1", false),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(private_literal(&url("http://169.254.169.254/latest/meta-data")).is_some());
        assert!(private_literal(&url("http://[::1]:8080/x")).is_some());
        assert!(private_literal(&url("https://cdn.example.com/x.jpg")).is_none());
    }

    #[tokio::test]
    async fn a_name_with_no_public_address_is_refused_by_the_client() {
        let client = media_client(Duration::from_secs(5), false);
        let err = client.get("http://localhost:9/x").send().await.unwrap_err();
        let refused = not_public(&err).unwrap_or_else(|| panic!("not refused as private: {err:?}"));
        assert_eq!(refused.0, "localhost");
        assert!(refused.to_string().contains("policies.media.private_hosts"));
    }
}
