//! `{{ name }}` templates in secret `data` values and output paths, filled from instance facts.

use std::collections::BTreeMap;
use std::fmt;

/// An instance fact a template may name. The names are the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fact {
    InstanceId,
    Region,
    AccountId,
    AvailabilityZone,
    ImageId,
    PrivateIp,
    LocalHostname,
    LocalIpv4,
    Ipv6,
}

impl Fact {
    pub const ALL: [Fact; 9] = [
        Fact::InstanceId,
        Fact::Region,
        Fact::AccountId,
        Fact::AvailabilityZone,
        Fact::ImageId,
        Fact::PrivateIp,
        Fact::LocalHostname,
        Fact::LocalIpv4,
        Fact::Ipv6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fact::InstanceId => "instance-id",
            Fact::Region => "region",
            Fact::AccountId => "account-id",
            Fact::AvailabilityZone => "availability-zone",
            Fact::ImageId => "image-id",
            Fact::PrivateIp => "private-ip",
            Fact::LocalHostname => "local-hostname",
            Fact::LocalIpv4 => "local-ipv4",
            Fact::Ipv6 => "ipv6",
        }
    }

    fn from_name(name: &str) -> Option<Fact> {
        Fact::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Facts that cost an extra IMDS read and are fetched only when a template names them.
    pub fn needs_metadata_read(self) -> bool {
        matches!(self, Fact::LocalHostname | Fact::LocalIpv4 | Fact::Ipv6)
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The instance facts known for this run.
#[derive(Clone, Debug, Default)]
pub struct Facts(BTreeMap<Fact, String>);

impl Facts {
    pub fn set(&mut self, fact: Fact, value: String) {
        self.0.insert(fact, value);
    }

    pub fn get(&self, fact: Fact) -> Option<&str> {
        self.0.get(&fact).map(String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Fact(Fact),
}

/// A parsed template string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; an unknown name or an unclosed `{{` is an error that says which.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed \"{{{{\" in {text:?}"))?;
            let name = after[..end].trim();
            let fact = Fact::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Fact::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown template name {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
            parts.push(Part::Fact(fact));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn facts(&self) -> impl Iterator<Item = Fact> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Fact(f) => Some(*f),
            Part::Text(_) => None,
        })
    }

    pub fn is_literal(&self) -> bool {
        self.facts().next().is_none()
    }

    /// Whether some facts could fill the template to give `text` (each fact a non-empty value
    /// without `/`): for paths met before the facts are known.
    pub fn could_render_to(&self, text: &str) -> bool {
        fn rest_matches(parts: &[Part], text: &str) -> bool {
            match parts.split_first() {
                None => text.is_empty(),
                Some((Part::Text(t), more)) => text
                    .strip_prefix(t.as_str())
                    .is_some_and(|r| rest_matches(more, r)),
                Some((Part::Fact(_), more)) => (1..=text.len())
                    .take_while(|&n| !text[..n].contains('/'))
                    .filter(|&n| text.is_char_boundary(n))
                    .any(|n| rest_matches(more, &text[n..])),
            }
        }
        rest_matches(&self.parts, text)
    }

    /// Fills the template; a fact that was not fetched is named in the error.
    pub fn render(&self, facts: &Facts) -> Result<String, Fact> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Fact(f) => out.push_str(facts.get(*f).ok_or(*f)?),
            }
        }
        Ok(out)
    }
}

/// Every template name used by the strings of a JSON value.
pub fn facts_in_json(value: &serde_json::Value, into: &mut Vec<Fact>) -> Result<(), String> {
    match value {
        serde_json::Value::String(s) => into.extend(Template::parse(s)?.facts()),
        serde_json::Value::Array(items) => {
            for item in items {
                facts_in_json(item, into)?;
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values() {
                facts_in_json(item, into)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A copy of `value` with every string template filled.
pub fn render_json(value: &serde_json::Value, facts: &Facts) -> Result<serde_json::Value, Fact> {
    use serde_json::Value;
    Ok(match value {
        Value::String(s) => match Template::parse(s) {
            Ok(t) => Value::String(t.render(facts)?),
            // Validated at load time; an unparsable string cannot reach here.
            Err(_) => Value::String(s.clone()),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_json(i, facts))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), render_json(v, facts)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("/etc/tls/{{ instance-id }}-{{region}}.pem").unwrap();
        let mut facts = Facts::default();
        facts.set(Fact::InstanceId, "i-1".into());
        facts.set(Fact::Region, "eu-west-1".into());
        assert_eq!(t.render(&facts).unwrap(), "/etc/tls/i-1-eu-west-1.pem");
        assert_eq!(
            t.facts().collect::<Vec<_>>(),
            vec![Fact::InstanceId, Fact::Region]
        );
    }

    #[test]
    fn missing_fact_is_named() {
        let t = Template::parse("{{ local-ipv4 }}").unwrap();
        assert_eq!(t.render(&Facts::default()), Err(Fact::LocalIpv4));
    }

    #[test]
    fn refuses_unknown_and_unclosed() {
        let e = Template::parse("{{ hostname }}").unwrap_err();
        assert!(e.contains("\"hostname\""), "{e}");
        assert!(e.contains("local-hostname"), "{e}");
        assert!(Template::parse("a {{ region")
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn literal_text_is_kept() {
        let t = Template::parse("plain } text").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render(&Facts::default()).unwrap(), "plain } text");
    }

    #[test]
    fn a_path_is_matched_against_what_the_template_could_give() {
        let t = Template::parse("/etc/tls/{{ instance-id }}-{{ region }}.pem").unwrap();
        assert!(t.could_render_to("/etc/tls/i-1-eu-west-1.pem"));
        assert!(
            !t.could_render_to("/etc/tls/i-1/x-eu-west-1.pem"),
            "a fact holds no /"
        );
        assert!(
            !t.could_render_to("/etc/tls/-eu.pem"),
            "a fact is not empty"
        );
        assert!(!t.could_render_to("/etc/passwd"));
        let literal = Template::parse("/etc/tls/a.pem").unwrap();
        assert!(literal.could_render_to("/etc/tls/a.pem"));
        assert!(!literal.could_render_to("/etc/tls/a.pem2"));
    }
}
