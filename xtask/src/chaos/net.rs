//! The harness's network: a bridge on this host and a network namespace per process, joined by
//! veth pairs, all on one private /24; the faults are nftables rules in a server's namespace.
//! Everything is named after the run, and [`Net`]'s drop deletes exactly what it created.

use std::net::Ipv4Addr;
use std::process::Command;

/// The bridge, the namespaces, and the /24 they share.
pub struct Net {
    run: String,
    subnet: u8,
    bridge: String,
    spaces: Vec<String>,
}

/// Runs `ip …`; an error names the command.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// A bridge `rc<run>` with `10.77.<subnet>.1/24`, on a /24 no route of this host uses yet.
    pub fn create(run: &str) -> Result<Self, String> {
        let routes = Command::new("ip")
            .args(["-4", "route", "show"])
            .output()
            .map_err(|e| format!("ip: {e} (install iproute2)"))?;
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        let subnet = (100..200u8)
            .find(|s| !routes.contains(&format!("10.77.{s}.")))
            .ok_or("no free 10.77.x.0/24 for the chaos network")?;
        let net = Self {
            run: run.to_owned(),
            subnet,
            bridge: format!("rc{run}"),
            spaces: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.addr(1)),
            "dev",
            &net.bridge,
        ])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// `10.77.<subnet>.<host>`.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, host)
    }

    /// The /24, as nftables and `WEBHOOK_ALLOW` write it.
    pub fn cidr(&self) -> String {
        format!("10.77.{}.0/24", self.subnet)
    }

    /// A namespace `rc<run>-<name>` holding `10.77.<subnet>.<host>`, on the bridge.
    pub fn space(&mut self, name: &str, host: u8) -> Result<String, String> {
        let ns = format!("rc{}-{name}", self.run);
        ip(&["netns", "add", &ns])?;
        self.spaces.push(ns.clone());
        let (outer, inner) = (
            format!("rc{}h{host}", self.run),
            format!("rc{}n{host}", self.run),
        );
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["link", "set", &outer, "master", &self.bridge, "up"])?;
        let addr = format!("{}/24", self.addr(host));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Loads an nftables script into namespace `ns`.
    pub fn nft(&self, ns: &str, script: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("nft: no stdin")?
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft in {ns}: {}\n{script}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for ns in &self.spaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
