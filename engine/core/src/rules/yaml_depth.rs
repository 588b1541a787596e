//! A nesting-depth check for YAML rule documents, run before they are read.
//!
//! Why: libyaml's scanner (which `serde_yaml_ng` runs on) does work proportional to the number of
//! open flow collections (`[`, `{`) for every token, so a document of nested brackets costs the
//! square of its depth: 40,000 `[` take seconds to refuse, and the admin API accepts documents of
//! megabytes. The deserializer's own recursion limit only applies after the whole document has
//! been scanned. Here a safe port of the same scanner (`libyaml-safer`) reads the tokens once and
//! stops at the first collection nested deeper than the limit, so the cost stays linear; being
//! the same scanner, it counts the nesting the real read would see (brackets in quotes, comments
//! and block scalars are not collections). Rule documents nest a handful of levels.

use libyaml_safer::{Scanner, TokenData};

/// Collections (block or flow) may nest at most this deep in a YAML rule document.
pub const YAML_DEPTH_MAX: usize = 64;

/// What the scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum YamlDepth {
    /// The whole document was scanned and nests at most the limit deep.
    Within,
    /// A collection nests deeper; the byte offset where the scan stopped.
    TooDeep { offset: u64 },
    /// The scanner refused the text, for this reason (the document is refused with it, rather
    /// than read by a second scanner that might disagree).
    Unreadable(String),
}

/// Scans `text` with the YAML scanner, stopping at the first collection deeper than `max`.
pub fn yaml_depth(text: &str, max: usize) -> YamlDepth {
    let mut input = text.as_bytes();
    let mut scanner = Scanner::new();
    scanner.set_input_string(&mut input);
    let mut depth = 0_usize;
    for token in scanner {
        let token = match token {
            Ok(token) => token,
            Err(error) => return YamlDepth::Unreadable(error.to_string()),
        };
        match token.data {
            TokenData::FlowSequenceStart | TokenData::FlowMappingStart | TokenData::BlockSequenceStart | TokenData::BlockMappingStart => {
                depth += 1;
                if depth > max {
                    return YamlDepth::TooDeep { offset: token.start_mark.index };
                }
            }
            TokenData::FlowSequenceEnd | TokenData::FlowMappingEnd | TokenData::BlockEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    YamlDepth::Within
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_collections_not_brackets_in_text() {
        assert_eq!(yaml_depth("rules: [[[1]]]", 4), YamlDepth::Within);
        assert!(matches!(yaml_depth("rules: [[[[1]]]]", 4), YamlDepth::TooDeep { .. }));
        let quoted = format!("label: \"{}\"\n# {}\nnote: |\n  {}\n", "[".repeat(100), "{".repeat(100), "[".repeat(100));
        assert_eq!(yaml_depth(&quoted, 4), YamlDepth::Within);
        // Three mappings, a sequence and the mapping in it: five levels.
        let block = "a:\n  b:\n    c:\n      - d: 1\n";
        assert_eq!(yaml_depth(block, 5), YamlDepth::Within);
        assert!(matches!(yaml_depth(block, 4), YamlDepth::TooDeep { .. }));
    }

    #[test]
    fn stops_at_the_limit_in_deep_documents() {
        let text = format!("rules: {}", "[".repeat(200_000));
        assert_eq!(yaml_depth(&text, YAML_DEPTH_MAX), YamlDepth::TooDeep { offset: 7 + YAML_DEPTH_MAX as u64 - 1 });
        assert!(matches!(yaml_depth("rules: \"unclosed", YAML_DEPTH_MAX), YamlDepth::Unreadable(_)));
    }
}
