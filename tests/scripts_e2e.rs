//! End-to-end tests of the bridging and NAT scripts (scripts/l2_*, l3_*):
//! real taptun processes, a LAN namespace behind peer 1, the scripts run
//! inside peer 1's namespace (iptables, ip_forward and routes are per
//! namespace, so nothing touches the host's).

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");

/// Joins `peer` (interface `lan0`) and the LAN namespace (interface `l0`,
/// with `lan_addr`) by a veth pair, both ends up.
fn lan_link(peer: &Netns, lan: &Netns, lan_addr: &str) {
    veth(peer, "lan0", lan, "l0");
    lan.exec(&format!("ip addr add {lan_addr} dev l0"));
}

/// Runs a script in `ns` with its state directory in the test's directory;
/// panics with its output when it fails.
fn script(ns: &Netns, dir: &Path, name: &str, args: &str) -> String {
    ns.exec(&format!(
        "TAPTUN_STATE_DIR={}/state sh {SCRIPTS}/{name} {args}",
        dir.display()
    ))
}

/// An interface's MTU.
fn mtu(ns: &Netns, dev: &str) -> u32 {
    ns.exec(&format!("cat /sys/class/net/{dev}/mtu"))
        .trim()
        .parse()
        .unwrap()
}

/// The MTUs that l2_bridge_up.sh must leave: the TAP raised to the LAN
/// port's 1500 (from taptun's default 1418), so that the bridge keeps the
/// LAN's MTU and full-size frames from the LAN reach the TAP.
fn assert_bridge_mtu(ns: &Netns, br: &str) {
    assert_eq!(mtu(ns, "lan0"), 1500);
    assert_eq!(mtu(ns, "tap0"), 1500, "TAP's MTU not raised to the LAN's");
    assert_eq!(mtu(ns, br), 1500, "the bridge's MTU shrank below the LAN's");
}

fn mac(ns: &Netns, dev: &str) -> String {
    ns.exec(&format!("cat /sys/class/net/{dev}/address"))
        .trim()
        .to_string()
}

/// Starts a one-connection TCP server in `ns` on port 7000 that answers
/// "seen <the client's address as it sees it>".
fn tcp_server(ns: &Netns) -> Background {
    Background::spawn(
        ns.command("sh").arg("-c").arg(
            "exec timeout 30 socat TCP-LISTEN:7000,reuseaddr SYSTEM:'echo seen $SOCAT_PEERADDR'",
        ),
    )
}

/// Connects from `ns` to `addr`:7000 and returns what the server said.
fn tcp_ask(ns: &Netns, addr: &str) -> String {
    ns.exec(&format!(
        "timeout 30 socat -u TCP:{addr}:7000,retry=100,interval=0.2 STDOUT"
    ))
    .trim()
    .to_string()
}

/// The interfaces, addresses and routes of a namespace, with what the
/// kernel changes by itself (lifetimes counting down, DAD in progress,
/// operational state) left out.
fn net_snapshot(ns: &Netns) -> String {
    ns.exec("ip -o link show | sed 's/ state [A-Z]*//'; ip -o addr show; ip -4 route; ip -6 route")
        .replace(" tentative", "")
        .split('\n')
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    if w.ends_with("sec") && w[..w.len() - 3].chars().all(|c| c.is_ascii_digit()) {
                        "Nsec"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The iptables rules of a namespace, without iptables-save's comment
/// (date) lines. Panics when iptables-save fails: its empty output would
/// pass for a namespace without rules.
fn rules(ns: &Netns) -> String {
    let out = ns.exec_out("iptables-save");
    assert!(
        out.status.success(),
        "iptables-save failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sysctl(ns: &Netns, path: &str) -> String {
    ns.exec(&format!("cat /proc/sys/net/ipv4/{path}"))
        .trim()
        .to_string()
}

fn no_ping(ns: &Netns, addr: &str) -> bool {
    !ns.exec_out(&format!("ping -c 2 -i 0.3 -W 1 {addr}"))
        .status
        .success()
}

#[test]
fn e2e_l2_bridge_dhcp_through_tunnel_and_restore() {
    require_e2e!();
    let p = Pair::new();
    let lan = Netns::new("lan");
    lan_link(&p.a, &lan, "10.88.0.10/24");
    // Peer 1 is a host of the LAN: two addresses, one with a label, an
    // IPv6 one, its default route and a static route all go through lan0.
    p.a.exec(
        "ip addr add 10.88.0.1/24 dev lan0 && ip addr add 10.88.0.2/24 dev lan0 \
         && ip addr add 10.88.1.1/24 dev lan0 label lan0:x \
         && ip addr add fd00:88::1/64 dev lan0 nodad \
         && ip route add default via 10.88.0.254 \
         && ip route add 10.200.0.0/16 via 10.88.0.10 metric 5 \
         && ip route add fd00:99::/64 via fd00:88::10 dev lan0",
    );
    let leases = p.dir.join("leases");
    let _dnsmasq = Background::spawn(lan.command("dnsmasq").args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--no-resolv",
        "--no-hosts",
        "--no-ping",
        "--user=root",
        "--interface=l0",
        "--bind-interfaces",
        "--dhcp-range=10.88.0.100,10.88.0.150,255.255.255.0,1h",
        &format!("--dhcp-leasefile={}", leases.display()),
        &format!("--pid-file={}", p.dir.join("dnsmasq.pid").display()),
    ]));
    // L2: no addresses on the TAPs; peer 2 gets one from the LAN's DHCP.
    let (_a, _b) = start_bare_peers(&p.a, &p.b, &p.dir, &[], &[]);
    // The TAP's IPv6 link-local address is part of the "before" picture.
    assert!(
        until(Duration::from_secs(10), Duration::from_millis(100), || {
            !p.a.exec("ip addr").contains("tentative")
        }),
        "timed out waiting for DAD on peer 1"
    );
    let before = net_snapshot(&p.a);
    assert_eq!(mtu(&p.a, "tap0"), 1418, "taptun's default TAP MTU");

    script(&p.a, &p.dir, "l2_bridge_up.sh", "tap0 lan0");
    assert_bridge_mtu(&p.a, "br0");
    let br = p.a.exec("ip -o addr show dev br0");
    assert!(br.contains("inet 10.88.0.1/24"), "{br}");
    assert!(br.contains("br0:x"), "label not moved: {br}");
    assert!(br.contains("inet6 fd00:88::1/64"), "{br}");
    assert!(
        !p.a.exec("ip -o addr show dev lan0").contains(" inet "),
        "lan0 kept an IPv4 address"
    );
    assert!(
        p.a.exec("ip route show default")
            .contains("via 10.88.0.254 dev br0")
    );
    assert_eq!(
        p.a.exec("ls /sys/class/net/br0/brif")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["lan0", "tap0"]
    );
    assert_eq!(
        p.a.exec("cat /sys/class/net/br0/bridge/stp_state").trim(),
        "0"
    );
    assert_eq!(mac(&p.a, "br0"), mac(&p.a, "lan0"));
    // Not cut off: peer 1 still reaches the LAN, now through the bridge.
    assert!(p.a.ping_until("10.88.0.10", Duration::from_secs(10)));
    let bridged = net_snapshot(&p.a);
    script(&p.a, &p.dir, "l2_bridge_up.sh", "tap0 lan0");
    assert_eq!(net_snapshot(&p.a), bridged, "a second up changed something");

    // DHCP across the tunnel and the bridge, with busybox udhcpc and a
    // script that only sets the address (the stock one rewrites
    // /etc/resolv.conf, which is the host's).
    let got = p.dir.join("dhcp-ip");
    let hook = p.dir.join("udhcpc.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncase $1 in bound|renew) ip addr add \"$ip/$subnet\" dev \"$interface\" && echo \"$ip\" > {} ;; esac\n",
            got.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 {}", hook.display()));
    p.b.exec(&format!(
        "timeout 60 udhcpc -f -q -n -i tap0 -t 30 -T 1 -A 1 -s {}",
        hook.display()
    ));
    let ip = std::fs::read_to_string(&got).unwrap().trim().to_string();
    let last: u32 = ip
        .strip_prefix("10.88.0.")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("address {ip} not from the LAN's DHCP pool"));
    assert!((100..=150).contains(&last), "{ip}");
    assert!(
        p.b.exec("ip -o addr show dev tap0")
            .contains(&format!("inet {ip}/24"))
    );
    let lease = std::fs::read_to_string(&leases).unwrap();
    assert!(
        lease.contains(&mac(&p.b, "tap0")) && lease.contains(&ip),
        "dnsmasq's lease does not name peer 2's TAP: {lease}"
    );

    // ARP, ping and TCP from peer 2 to the LAN host, which sees peer 2's
    // own address: an L2 path, no NAT.
    assert!(p.b.ping_until("10.88.0.10", Duration::from_secs(10)));
    let neigh = p.b.exec("ip neigh show 10.88.0.10 dev tap0");
    assert!(
        neigh.contains(&format!("lladdr {}", mac(&lan, "l0"))),
        "ARP did not resolve the LAN host's MAC: {neigh}"
    );
    assert!(p.b.ping("10.88.0.10", 3));
    let _server = tcp_server(&lan);
    assert_eq!(tcp_ask(&p.b, "10.88.0.10"), format!("seen {ip}"));

    script(&p.a, &p.dir, "l2_bridge_down.sh", "tap0 lan0");
    assert!(!p.a.has_link("br0"), "the bridge that up created stays");
    assert_eq!(
        mtu(&p.a, "tap0"),
        1418,
        "down did not restore the TAP's MTU"
    );
    assert_eq!(net_snapshot(&p.a), before, "down did not restore peer 1");
    assert!(p.a.ping("10.88.0.10", 1), "peer 1 lost the LAN");
    assert!(no_ping(&p.b, "10.88.0.10"), "still bridged after down");
    let left = std::fs::read_dir(p.dir.join("state")).unwrap().count();
    assert_eq!(left, 0, "down left its state file behind");

    // Once more without brctl (ip link ... type bridge), a named bridge.
    p.a.exec(&format!(
        "TAPTUN_BRCTL= TAPTUN_STATE_DIR={}/state sh {SCRIPTS}/l2_bridge_up.sh tap0 lan0 brq",
        p.dir.display()
    ));
    assert_bridge_mtu(&p.a, "brq");
    assert!(p.b.ping_until("10.88.0.10", Duration::from_secs(10)));
    p.a.exec(&format!(
        "TAPTUN_BRCTL= TAPTUN_STATE_DIR={}/state sh {SCRIPTS}/l2_bridge_down.sh tap0 lan0 brq",
        p.dir.display()
    ));
    assert!(!p.a.has_link("brq"));
    assert_eq!(
        mtu(&p.a, "tap0"),
        1418,
        "down (ip) did not restore the TAP's MTU"
    );
    assert_eq!(
        net_snapshot(&p.a),
        before,
        "down (ip) did not restore peer 1"
    );
}

#[test]
fn e2e_l3_nat_masquerades_and_restores_rules_exactly() {
    require_e2e!();
    let p = Pair::new();
    let lan = Netns::new("lan");
    // The LAN host has no route back to the tunnel's network: only
    // masquerading lets it answer.
    lan_link(&p.a, &lan, "10.77.0.10/24");
    p.a.exec("ip addr add 10.77.0.1/24 dev lan0");
    let (_a, _b) = p.peers(&[], &[]);
    p.b.exec(&format!("ip route add 10.77.0.0/24 via {TAP_A}"));
    // A router's rules that must survive: a DROP policy on FORWARD, rules
    // in filter and nat, a chain of its own.
    p.a.exec(
        "iptables -P FORWARD DROP \
         && iptables -A FORWARD -s 203.0.113.0/24 -j DROP \
         && iptables -A INPUT -p tcp --dport 2222 -j DROP \
         && iptables -N LOCALCHAIN && iptables -A LOCALCHAIN -j RETURN \
         && iptables -t nat -A POSTROUTING -s 198.51.100.0/24 -o lan0 -j MASQUERADE",
    );
    let rules_before = rules(&p.a);
    assert!(rules_before.contains("LOCALCHAIN"), "{rules_before}");
    assert_eq!(sysctl(&p.a, "ip_forward"), "0");
    assert!(p.b.ping_until(TAP_A, Duration::from_secs(10)));
    assert!(no_ping(&p.b, "10.77.0.10"), "forwarded before l3_nat_up.sh");

    script(&p.a, &p.dir, "l3_nat_up.sh", "tap0 lan0");
    let rules_up = rules(&p.a);
    assert_eq!(
        rules_up.matches("taptun:l3_nat:tap0:lan0:").count(),
        3,
        "{rules_up}"
    );
    assert_eq!(sysctl(&p.a, "ip_forward"), "1");
    script(&p.a, &p.dir, "l3_nat_up.sh", "tap0 lan0");
    assert_eq!(rules(&p.a), rules_up, "a second up changed the rules");

    assert!(p.b.ping_until("10.77.0.10", Duration::from_secs(10)));
    let _server = tcp_server(&lan);
    assert_eq!(
        tcp_ask(&p.b, "10.77.0.10"),
        "seen 10.77.0.1",
        "not masqueraded"
    );

    script(&p.a, &p.dir, "l3_nat_down.sh", "tap0 lan0");
    assert_eq!(rules(&p.a), rules_before, "down did not restore the rules");
    assert_eq!(sysctl(&p.a, "ip_forward"), "0");
    assert!(no_ping(&p.b, "10.77.0.10"), "still forwarded after down");
    // A second down finds nothing to do and changes nothing.
    script(&p.a, &p.dir, "l3_nat_down.sh", "tap0 lan0");
    assert_eq!(rules(&p.a), rules_before);
}

#[test]
fn e2e_l3_proxy_arp_puts_peer_on_lan_and_restores() {
    require_e2e!();
    let p = Pair::new();
    let lan = Netns::new("lan");
    lan_link(&p.a, &lan, "10.66.0.10/24");
    p.a.exec("ip addr add 10.66.0.1/24 dev lan0");
    // Peer 2 takes an address of the LAN's network; peer 1's TAP has none.
    let (_a, _b) = start_bare_peers(&p.a, &p.b, &p.dir, &[], &["-a", "10.66.0.50/24"]);
    // No iptables tables at all in this namespace: down must leave none.
    let rules_before = rules(&p.a);
    assert_eq!(rules_before, "", "a fresh namespace has iptables rules");
    let settings = |ns: &Netns| {
        format!(
            "forward {} tap0 {} lan0 {}\n{}",
            sysctl(ns, "ip_forward"),
            sysctl(ns, "conf/tap0/proxy_arp"),
            sysctl(ns, "conf/lan0/proxy_arp"),
            ns.exec("ip -4 route")
        )
    };
    let before = settings(&p.a);
    assert!(before.starts_with("forward 0 tap0 0 lan0 0"), "{before}");
    assert!(
        no_ping(&p.b, "10.66.0.10"),
        "reachable before l3_proxy_arp_up.sh"
    );

    script(&p.a, &p.dir, "l3_proxy_arp_up.sh", "tap0 lan0 10.66.0.50");
    let up = (settings(&p.a), rules(&p.a));
    assert!(up.0.starts_with("forward 1 tap0 1 lan0 1"), "{}", up.0);
    assert!(up.0.contains("10.66.0.50 dev tap0 proto 246"), "{}", up.0);
    // The two tagged FORWARD rules, one each way, and nothing else: the
    // tag says that forwarding was off, the filter table new (f) and
    // proxy ARP off on both.
    let tag = "taptun:l3_proxy_arp:tap0:lan0:fwd=0:nf=f:pa=00";
    let forward: Vec<String> = (up.1.lines())
        .filter(|l| l.starts_with("-A "))
        .map(|l| l.replace('"', ""))
        .collect();
    assert_eq!(
        forward,
        [
            format!("-A FORWARD -i tap0 -o lan0 -m comment --comment {tag} -j ACCEPT"),
            format!("-A FORWARD -i lan0 -o tap0 -m comment --comment {tag} -j ACCEPT"),
        ],
        "{}",
        up.1
    );
    script(&p.a, &p.dir, "l3_proxy_arp_up.sh", "tap0 lan0 10.66.0.50");
    assert_eq!(
        (settings(&p.a), rules(&p.a)),
        up,
        "a second up changed something"
    );

    // A fresh namespace forwards anything (policy ACCEPT): with DROP, only
    // the tagged rules let the traffic below through.
    p.a.exec("iptables -P FORWARD DROP");
    assert!(
        p.b.ping_until("10.66.0.10", Duration::from_secs(10)),
        "not forwarded under FORWARD policy DROP: the tagged rules do not let it through"
    );
    // The LAN host found peer 2's address at peer 1's MAC: proxy ARP.
    let neigh = lan.exec("ip neigh show 10.66.0.50 dev l0");
    assert!(
        neigh.contains(&format!("lladdr {}", mac(&p.a, "lan0"))),
        "{neigh}"
    );
    let _server = tcp_server(&lan);
    assert_eq!(tcp_ask(&p.b, "10.66.0.10"), "seen 10.66.0.50", "NATed?");
    // Back to the policy up found, so that down may remove the table.
    p.a.exec("iptables -P FORWARD ACCEPT");

    script(&p.a, &p.dir, "l3_proxy_arp_down.sh", "tap0 lan0");
    assert_eq!(settings(&p.a), before, "down did not restore the settings");
    assert_eq!(rules(&p.a), rules_before, "down left iptables state behind");
    lan.exec("ip neigh flush dev l0");
    assert!(no_ping(&p.b, "10.66.0.10"), "still proxied after down");
}

/// Wrong arguments: usage on stderr and exit 2; `--help`: usage on stdout
/// and exit 0. The arguments are checked before anything else, so this
/// runs anywhere and changes nothing.
#[test]
fn scripts_print_usage_on_wrong_arguments() {
    let run = |args: &[&str]| {
        std::process::Command::new("sh")
            .args(args)
            .output()
            .expect("spawn sh")
    };
    for name in [
        "l2_bridge_up.sh",
        "l2_bridge_down.sh",
        "l3_nat_up.sh",
        "l3_nat_down.sh",
        "l3_proxy_arp_up.sh",
        "l3_proxy_arp_down.sh",
    ] {
        let path = format!("{SCRIPTS}/{name}");
        for bad in [
            vec![path.as_str()],
            vec![path.as_str(), "tap0"],
            vec![path.as_str(), "tap 0", "eth0"],
            vec![path.as_str(), "tap0", "tap0"],
            vec![path.as_str(), "tap0", "an-interface-name-too-long"],
        ] {
            let out = run(&bad);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
            assert!(err.contains(name), "{bad:?}: {err}");
        }
        let out = run(&[path.as_str(), "--help"]);
        assert_eq!(out.status.code(), Some(0), "{name} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("usage: "));
    }
    // Down takes exactly the interfaces; NAT's sources and proxy ARP's
    // peer addresses must be IPv4 addresses or networks.
    for args in [
        ["l3_nat_down.sh", "tap0", "eth0", "10.0.0.0/8"],
        ["l3_nat_up.sh", "tap0", "eth0", "not-a-net"],
        ["l3_proxy_arp_up.sh", "tap0", "eth0", "10.0.0"],
        ["l2_bridge_up.sh", "tap0", "eth0", "br;0"],
    ] {
        let path = format!("{SCRIPTS}/{}", args[0]);
        let out = run(&[path.as_str(), args[1], args[2], args[3]]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
