//! Where a webhook may be delivered: http(s) URLs whose host resolves only to public addresses,
//! unless `webhooks.allow_private_addresses` (a development setting) says otherwise. Checked when
//! an endpoint is saved and again before every attempt (a name may resolve elsewhere later).

use std::net::{IpAddr, SocketAddr};

/// What is wrong with a target, in words for the 422 or the delivery log.
pub type Refusal = String;

/// A URL's scheme, host and port, if it is one we deliver to.
pub fn parse(url: &str) -> Result<(bool, String, u16), Refusal> {
    let url = url.trim();
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("must be an http:// or https:// URL".to_owned());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry credentials".to_owned());
    }
    let default_port = if tls { 443 } else { 80 };
    let bad_port = || "has a bad port".to_owned();
    let (host, port) = match authority.strip_prefix('[') {
        // [v6]:port
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(|| "has a bad address".to_owned())?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad_port)?),
                None if after.is_empty() => (host, default_port),
                None => return Err(bad_port()),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad_port)?),
            None => (authority, default_port),
        },
    };
    if host.is_empty() || url.len() > 2048 || url.chars().any(char::is_whitespace) {
        return Err("must name a host".to_owned());
    }
    Ok((tls, host.to_owned(), port))
}

/// Whether an address is one a webhook must not reach by default: loopback, private, link-local,
/// unspecified, multicast, shared or documentation ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments().first().copied().unwrap_or(0);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// Resolves a target; refuses it if any address it resolves to is private (unless allowed). The
/// lookup blocks (`getaddrinfo`), on a blocking thread under the default scheduling: one created
/// by a real-time API worker (an endpoint checked as it is registered) would start with its policy.
pub async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, Refusal> {
    let target = (host.to_owned(), port);
    let addrs: Vec<SocketAddr> = portcullis_actors::sched::blocking(move || {
        std::net::ToSocketAddrs::to_socket_addrs(&target).map(Iterator::collect::<Vec<_>>)
    })
    .await
    .map_err(|e| format!("cannot resolve {host}: {e}"))?
    .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if !allow_private && let Some(private) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(format!("{host} resolves to {}, a private address", private.ip()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_for_scheme_host_and_port() {
        assert_eq!(parse("https://hooks.example.com/in"), Ok((true, "hooks.example.com".to_owned(), 443)));
        assert_eq!(parse("http://127.0.0.1:8081/x?y"), Ok((false, "127.0.0.1".to_owned(), 8081)));
        assert_eq!(parse("http://[::1]:9000/"), Ok((false, "::1".to_owned(), 9000)));
        assert!(parse("ftp://example.com").is_err());
        assert!(parse("https://user:pw@example.com/").is_err());
        assert!(parse("https://example.com:0/").is_err());
        assert!(parse("https:///path").is_err());
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(!is_private(ip.parse().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))), "{ip}");
        }
    }
}
