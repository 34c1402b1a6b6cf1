//! A site built through the API for engine tests: an organization with zones, gates, an access
//! rule, a device key bound to every gate, and helpers to issue passes and ask for decisions.

use serde_json::{Value, json};

use crate::helpers::{Login, TestApp, TestResult};

pub struct Site {
    pub app: TestApp,
    pub root: Login,
    pub org: String,
    pub zones: Vec<String>,
    pub gates: Vec<String>,
    pub rule: String,
    pub device_key: String,
}

/// A decision's verdict and reason.
pub type Verdict = (String, String);

impl Site {
    /// `gates_per_zone` two-way gates in each of `zones` zones; a rule opening every zone always.
    pub async fn build(app: TestApp, zones: usize, gates_per_zone: usize) -> TestResult<Site> {
        let root = app.platform_admin().await?;
        let org = app.create_org(&root, &format!("site-{}", uuid::Uuid::new_v4().simple())).await?;
        let mut site = Site {
            app,
            root,
            org,
            zones: Vec::new(),
            gates: Vec::new(),
            rule: String::new(),
            device_key: String::new(),
        };
        for z in 0..zones {
            let zone = site.post("/zones", json!({"name": format!("Zone {z}")})).await?;
            site.zones.push(zone["id"].as_str().unwrap_or_default().to_owned());
        }
        for zone in site.zones.clone() {
            for g in 0..gates_per_zone {
                let gate = site
                    .post("/gates", json!({"name": format!("Gate {zone} {g}"), "zone_id": zone, "direction": "both"}))
                    .await?;
                site.gates.push(gate["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        site.rule = site.rule_for(&site.zones.clone(), json!({})).await?;
        let gates: Vec<&str> = site.gates.iter().map(String::as_str).collect();
        let (_, key) = site.app.create_key(&site.root, &site.org, &["gate:decide"], &gates).await?;
        site.device_key = key;
        Ok(site)
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/api/v1/orgs/{}{rest}", self.org)
    }

    /// POST under the organization as the platform admin; fails unless 2xx.
    pub async fn post(&self, rest: &str, body: Value) -> TestResult<Value> {
        let reply = self.app.call("POST", &self.path(rest), Some(&self.root.access), Some(body)).await?;
        if !(200..300).contains(&reply.status) {
            return Err(format!("POST {rest}: {} {}", reply.status, reply.text()).into());
        }
        Ok(reply.json())
    }

    /// An access rule over `zones`, with extra fields (weekdays, windows, anti-passback…).
    pub async fn rule_for(&self, zones: &[String], extra: Value) -> TestResult<String> {
        let mut body = json!({"name": format!("Rule {}", uuid::Uuid::new_v4().simple()), "zone_ids": zones});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        Ok(self.post("/access-rules", body).await?["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Issues a pass with a PIN credential (PINs make the simplest test credential) and returns
    /// (pass id, credential for decisions). `overrides` replace fields of the default body.
    pub async fn pass(&self, overrides: Value) -> TestResult<(String, Value)> {
        let now = chrono::Utc::now();
        let mut body = json!({
            "holder_name": "Visitor",
            "access_rule_id": self.rule,
            "type": "multi",
            "max_uses": 100,
            "valid_from": (now - chrono::Duration::hours(1)).to_rfc3339(),
            "valid_to": (now + chrono::Duration::hours(8)).to_rfc3339(),
            "credential": {"kind": "pin"},
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), overrides.as_object()) {
            body.extend(extra.clone());
        }
        let card = match body["credential"]["kind"].as_str() {
            Some("card") => {
                let c = &body["credential"];
                json!({"kind": "card", "value": format!("{}:{}", c["facility_code"].as_u64().unwrap_or(0), c["card_number"])})
            }
            _ => Value::Null,
        };
        let pass = self.post("/passes", body).await?;
        // The engine chose the PIN and shows it this once.
        let credential = match pass["credential"]["kind"].as_str() {
            Some("pin") => json!({"kind": "pin", "value": pass["credential"]["value"]}),
            _ => card,
        };
        Ok((pass["id"].as_str().unwrap_or_default().to_owned(), credential))
    }

    /// Asks gate `gate` (an index into `gates`) with the site's device key.
    pub async fn decide(&self, gate: usize, credential: &Value, direction: &str) -> TestResult<Verdict> {
        let reply = self
            .decide_raw(&self.gates[gate], &self.device_key, json!({"credential": credential, "direction": direction}))
            .await?;
        if reply.status != 200 {
            return Err(format!("decision failed: {} {}", reply.status, reply.text()).into());
        }
        let body = reply.json();
        Ok((body["decision"].as_str().unwrap_or("?").to_owned(), body["reason"].as_str().unwrap_or("?").to_owned()))
    }

    pub async fn decide_raw(&self, gate_id: &str, key: &str, body: Value) -> TestResult<crate::helpers::Reply> {
        self.app.call("POST", &format!("/api/v1/gates/{gate_id}/decisions"), Some(key), Some(body)).await
    }

    pub async fn get(&self, rest: &str) -> TestResult<Value> {
        Ok(self.app.call("GET", &self.path(rest), Some(&self.root.access), None).await?.json())
    }
}

pub fn allow() -> Verdict {
    ("allow".into(), "allowed".into())
}

pub fn deny(reason: &str) -> Verdict {
    ("deny".into(), reason.into())
}
