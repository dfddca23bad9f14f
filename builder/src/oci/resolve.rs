// SPDX-License-Identifier: Apache-2.0
//! The dependency closure of a recipe's packages in one suite's index.
//!
//! Depends and Pre-Depends only (no Recommends), the first alternative the
//! index can satisfy, virtual packages through Provides. Version bounds are
//! not checked: one suite's index holds one version of each package, and it
//! is the one its dependents were built against.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Result};

/// What the closure needs of an index stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    pub package: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub depends: Vec<Vec<String>>,
}

/// A parsed `Packages` index.
#[derive(Debug, Default)]
pub struct Index {
    pub packages: HashMap<String, Stanza>,
    /// Virtual name -> packages that provide it, in index order.
    pub provides: HashMap<String, Vec<String>>,
}

/// `a (>= 1), b | c:any` -> [[a], [b, c]].
pub fn parse_relations(s: &str) -> Vec<Vec<String>> {
    s.split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split_whitespace().next()?;
                    let name = name.split(':').next().unwrap_or(name);
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

impl Index {
    pub fn parse(text: &str) -> Index {
        let mut idx = Index::default();
        for stanza in text.split("\n\n") {
            // Continuation lines (Description) start with a space: skipped.
            let mut f: HashMap<&str, &str> = HashMap::new();
            for line in stanza.lines() {
                if line.starts_with(' ') {
                    continue;
                }
                if let Some((k, v)) = line.split_once(':') {
                    f.insert(k, v.trim());
                }
            }
            let (Some(p), Some(v), Some(fname), Some(sha)) = (
                f.get("Package"),
                f.get("Version"),
                f.get("Filename"),
                f.get("SHA256"),
            ) else {
                continue;
            };
            let mut depends = Vec::new();
            for k in ["Pre-Depends", "Depends"] {
                if let Some(d) = f.get(k) {
                    depends.extend(parse_relations(d));
                }
            }
            if let Some(pr) = f.get("Provides") {
                for g in parse_relations(pr) {
                    for name in g {
                        idx.provides.entry(name).or_default().push(p.to_string());
                    }
                }
            }
            idx.packages.insert(
                p.to_string(),
                Stanza {
                    package: p.to_string(),
                    version: v.to_string(),
                    filename: fname.to_string(),
                    sha256: sha.to_string(),
                    size: f.get("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                    depends,
                },
            );
        }
        idx
    }

    /// The real package that satisfies `name`, if any.
    fn satisfy(&self, name: &str) -> Option<&Stanza> {
        self.packages.get(name).or_else(|| {
            self.provides
                .get(name)?
                .iter()
                .find_map(|p| self.packages.get(p))
        })
    }

    /// Every package `wanted` needs, sorted by name. A dependency group
    /// that names or resolves to an excluded package is left out, with
    /// whatever only it pulls in.
    pub fn closure(&self, wanted: &[String], exclude: &[String]) -> Result<Vec<Stanza>> {
        let excluded: BTreeSet<&str> = exclude.iter().map(String::as_str).collect();
        let mut out: BTreeMap<String, Stanza> = BTreeMap::new();
        let mut todo: Vec<(String, String)> = wanted
            .iter()
            .map(|w| (w.clone(), "the recipe".to_string()))
            .collect();
        for w in wanted {
            if excluded.contains(w.as_str()) {
                bail!("{w} is both asked for and excluded");
            }
        }
        while let Some((name, by)) = todo.pop() {
            let Some(s) = self.satisfy(&name) else {
                bail!("no package in the index provides {name} (needed by {by})");
            };
            if out.contains_key(&s.package) {
                continue;
            }
            for group in &s.depends {
                let cut = group.iter().any(|a| {
                    excluded.contains(a.as_str())
                        || self
                            .satisfy(a)
                            .is_some_and(|x| excluded.contains(x.package.as_str()))
                });
                if cut {
                    continue;
                }
                // Already chosen beats first listed: fewer packages.
                let chosen = group
                    .iter()
                    .find(|a| {
                        self.satisfy(a)
                            .is_some_and(|x| out.contains_key(&x.package))
                    })
                    .or_else(|| group.iter().find(|a| self.satisfy(a).is_some()));
                match chosen {
                    Some(a) => todo.push((a.clone(), s.package.clone())),
                    None => bail!(
                        "no package in the index satisfies {} (needed by {})",
                        group.join(" | "),
                        s.package
                    ),
                }
            }
            out.insert(s.package.clone(), s.clone());
        }
        Ok(out.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDX: &str = "Package: app\nVersion: 1\nDepends: libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0, mail-transport-agent\nFilename: pool/a/app.deb\nSize: 10\nSHA256: aa\nDescription: x\n continued: line\n\n\
Package: libc6\nVersion: 2.41\nPre-Depends: libgcc-s1\nFilename: pool/l/libc6.deb\nSize: 20\nSHA256: bb\n\n\
Package: libgcc-s1\nVersion: 14\nDepends: libc6\nFilename: pool/l/libgcc.deb\nSize: 5\nSHA256: cc\n\n\
Package: debconf\nVersion: 1.5\nDepends: perl-base\nFilename: pool/d/debconf.deb\nSize: 5\nSHA256: dd\n\n\
Package: perl-base\nVersion: 5\nFilename: pool/p/perl.deb\nSize: 5\nSHA256: ee\n\n\
Package: exim4\nVersion: 4\nProvides: mail-transport-agent\nFilename: pool/e/exim.deb\nSize: 5\nSHA256: ff\n";

    fn names(v: &[Stanza]) -> Vec<&str> {
        v.iter().map(|s| s.package.as_str()).collect()
    }

    #[test]
    fn relations_drop_versions_and_arch_qualifiers() {
        assert_eq!(
            parse_relations("a (>= 1), b | c:any (<< 2) , "),
            vec![
                vec!["a".to_string()],
                vec!["b".to_string(), "c".to_string()]
            ]
        );
    }

    #[test]
    fn closure_follows_depends_provides_and_cycles() {
        let idx = Index::parse(IDX);
        let c = idx.closure(&["app".into()], &[]).expect("closure");
        assert_eq!(
            names(&c),
            ["app", "debconf", "exim4", "libc6", "libgcc-s1", "perl-base"]
        );
        assert_eq!(c[0].size, 10);
    }

    #[test]
    fn excluded_packages_cut_what_only_they_need() {
        let idx = Index::parse(IDX);
        let c = idx
            .closure(&["app".into()], &["debconf".into(), "exim4".into()])
            .expect("closure");
        // The virtual mail-transport-agent resolves to the excluded exim4.
        assert_eq!(names(&c), ["app", "libc6", "libgcc-s1"]);
    }

    #[test]
    fn a_missing_dependency_names_who_needs_it() {
        let idx = Index::parse("Package: a\nVersion: 1\nDepends: ghost\nFilename: f\nSHA256: 00\n");
        let e = idx.closure(&["a".into()], &[]).expect_err("ghost");
        assert!(
            e.to_string().contains("ghost") && e.to_string().contains("needed by a"),
            "{e}"
        );
        assert!(idx.closure(&["nope".into()], &[]).is_err());
    }
}
