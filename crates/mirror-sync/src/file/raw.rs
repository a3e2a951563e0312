//! The YAML shape of a sync file, as serde reads it: every key the file
//! may hold, with its position kept for messages. Nothing here checks a
//! value; `check` does.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) defaults: Option<RawDefaults>,
    #[serde(default)]
    pub(super) images: Vec<Spanned<RawImage>>,
    #[serde(default)]
    pub(super) log_groups: Vec<Spanned<RawLogGroup>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDefaults {
    pub(super) target: Option<Spanned<String>>,
    pub(super) prefix: Option<String>,
    pub(super) platforms: Option<Vec<Spanned<String>>>,
    pub(super) repository: Option<RawRepository>,
    pub(super) referrers: Option<Spanned<RawStrings>>,
    pub(super) require_signature: Option<Spanned<RawStrings>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawImage {
    pub(super) from: Spanned<String>,
    pub(super) to: Option<Spanned<String>>,
    pub(super) target: Option<Spanned<String>>,
    pub(super) prefix: Option<String>,
    pub(super) tags: Option<Spanned<RawTags>>,
    pub(super) platforms: Option<Vec<Spanned<String>>>,
    pub(super) repository: Option<RawRepository>,
    pub(super) referrers: Option<Spanned<RawStrings>>,
    pub(super) require_signature: Option<Spanned<RawStrings>>,
}

/// One string or a list of them: `referrers: signature,sbom` or
/// `referrers: [signature, sbom]`; `require-signature: cosign:KEY.pub` or a
/// list of keys.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawStrings {
    One(String),
    Many(Vec<String>),
}

impl RawStrings {
    pub(super) fn items(&self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text.clone()],
            Self::Many(items) => items.clone(),
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRepository {
    pub(super) tag_mutability: Option<Spanned<String>>,
    pub(super) tag_mutability_exclusions: Option<Vec<String>>,
    pub(super) scan_on_push: Option<bool>,
    pub(super) encryption: Option<Spanned<String>>,
    pub(super) kms_key: Option<String>,
    pub(super) tags: Option<BTreeMap<String, String>>,
    /// `false`: only use an existing repository.
    pub(super) create: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawLogGroup {
    pub(super) name: Spanned<String>,
    pub(super) retention_days: Option<Spanned<i32>>,
}

/// `tags:` is a list of tags or a map of filters.
pub(super) enum RawTags {
    List(Vec<String>),
    Select {
        regex: Option<String>,
        exclude: Vec<String>,
        semver: Option<String>,
        latest: Option<usize>,
    },
}

impl<'de> Deserialize<'de> for RawTags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor;

        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = RawTags;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a list of tags ([\"3.10\", \"3.11\"]) or a map with regex, exclude, semver, latest",
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawTags, A::Error> {
                let mut tags = Vec::new();
                while let Some(tag) = seq.next_element::<TagText>()? {
                    tags.push(tag.0);
                }
                Ok(RawTags::List(tags))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTags, A::Error> {
                const FIELDS: &[&str] = &["regex", "exclude", "semver", "latest"];
                let (mut regex, mut exclude, mut semver, mut latest) = (None, None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "regex" if regex.is_none() => regex = Some(map.next_value()?),
                        "exclude" if exclude.is_none() => {
                            exclude = Some(map.next_value::<OneOrMany>()?.0);
                        }
                        "semver" if semver.is_none() => semver = Some(map.next_value()?),
                        "latest" if latest.is_none() => latest = Some(map.next_value()?),
                        known if FIELDS.contains(&known) => {
                            return Err(de::Error::duplicate_field(
                                FIELDS[FIELDS.iter().position(|f| *f == known).unwrap_or(0)],
                            ));
                        }
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                Ok(RawTags::Select {
                    regex,
                    exclude: exclude.unwrap_or_default(),
                    semver,
                    latest,
                })
            }
        }

        deserializer.deserialize_any(TagsVisitor)
    }
}

/// A tag as written: `3.10` stays the text `3.10`, not the number 3.1.
pub(super) struct TagText(String);

impl<'de> Deserialize<'de> for TagText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = TagText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tag (quote tags that look like numbers: \"3.10\")")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TagText, E> {
                Ok(TagText(v.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TagText, E> {
                Ok(TagText(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TagText, E> {
                Err(E::custom(
                    "this tag reads as a number: quote it (\"3.10\"), or 3.10 becomes 3.1",
                ))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// `exclude: '.*-rc.*'` or `exclude: [a, b]`.
pub(super) struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a regular expression or a list of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    all.push(item);
                }
                Ok(OneOrMany(all))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}
