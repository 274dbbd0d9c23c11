//! The combined `instructions` of a session's servers, kept under [`LIMIT`] bytes (clients cut
//! them there). When the servers' texts do not fit, each gets a fair share of the room (a server
//! that needs less leaves the rest to the others) and a longer text is cut to its first
//! sentences with a pointer to its full text, which is served as the resource
//! `mcpd://instructions/<server>`.

use serde_json::json;

/// Most bytes of the combined instructions.
pub const LIMIT: usize = 2048;
/// URI prefix of the resources that hold each server's full instructions.
pub const URI_PREFIX: &str = "mcpd://instructions/";

/// The instructions a session gets.
#[derive(Debug, Default, PartialEq)]
pub struct Combined {
    /// The text, at most [`LIMIT`] bytes; `None` when no server has instructions.
    pub text: Option<String>,
    /// Servers whose part was summarised (their full text is a resource).
    pub cut: Vec<String>,
}

fn heading(server: &str) -> String {
    format!("## {server}\n")
}

fn pointer(server: &str) -> String {
    format!(" … (full text: resource {URI_PREFIX}{server})")
}

/// Combines `(server, text)` parts, in order.
pub fn combine(parts: &[(String, String)]) -> Combined {
    let parts: Vec<(&str, &str)> = parts
        .iter()
        .map(|(s, t)| (s.as_str(), t.trim()))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    if parts.is_empty() {
        return Combined::default();
    }
    let whole = |s: &str, t: &str| heading(s).len() + t.len();
    let separators = 2 * (parts.len() - 1);
    let full: usize = parts.iter().map(|(s, t)| whole(s, t)).sum::<usize>() + separators;
    if full <= LIMIT {
        return Combined {
            text: Some(
                parts
                    .iter()
                    .map(|(s, t)| format!("{}{t}", heading(s)))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
            cut: Vec::new(),
        };
    }
    // Water-filling: parts smaller than an equal share keep everything; the rest share what
    // is left equally.
    let mut room = LIMIT.saturating_sub(separators);
    let mut budgets = vec![0usize; parts.len()];
    let mut open: Vec<usize> = (0..parts.len()).collect();
    loop {
        let share = room / open.len().max(1);
        let (small, big): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| whole(parts[i].0, parts[i].1) <= share);
        if small.is_empty() {
            for &i in &big {
                budgets[i] = share;
            }
            break;
        }
        for &i in &small {
            budgets[i] = whole(parts[i].0, parts[i].1);
            room -= budgets[i];
        }
        open = big;
        if open.is_empty() {
            break;
        }
    }
    let mut cut = Vec::new();
    let texts: Vec<String> = parts
        .iter()
        .zip(&budgets)
        .map(|((server, text), &budget)| {
            if whole(server, text) <= budget {
                return format!("{}{text}", heading(server));
            }
            cut.push((*server).to_owned());
            let room = budget.saturating_sub(heading(server).len() + pointer(server).len());
            format!(
                "{}{}{}",
                heading(server),
                summarise(text, room),
                pointer(server)
            )
        })
        .collect();
    let mut text = texts.join("\n\n");
    if text.len() > LIMIT {
        // Only when a server's name alone is longer than its share: cut, on a char boundary.
        let mut end = LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Combined {
        text: Some(text),
        cut,
    }
}

/// The start of `text` in at most `room` bytes: whole sentences when one fits, else whole
/// words.
pub fn summarise(text: &str, room: usize) -> String {
    if text.len() <= room {
        return text.to_owned();
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let sentence = head
        .char_indices()
        .rev()
        .filter(|(i, c)| {
            matches!(c, '.' | '!' | '?' | '\n')
                && text[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
        })
        .map(|(i, c)| i + c.len_utf8())
        .next();
    let cut = match sentence {
        Some(at) if at >= room / 3 => &head[..at],
        _ => match head.rfind(char::is_whitespace) {
            Some(at) if at > 0 => &head[..at],
            _ => head,
        },
    };
    cut.trim_end().to_owned()
}

/// The resource entry (as listed) for a server's full instructions.
pub fn resource_item(server: &str) -> String {
    json!({
        "uri": format!("{URI_PREFIX}{server}"),
        "name": format!("instructions-{server}"),
        "title": format!("Instructions of {server} (full text)"),
        "description": "The server's instructions in full; the session's combined instructions carry a summary.",
        "mimeType": "text/markdown",
    })
    .to_string()
}

/// The `resources/read` result for a server's instructions.
pub fn read_result(server: &str, text: &str) -> serde_json::Value {
    json!({"contents": [{"uri": format!("{URI_PREFIX}{server}"), "mimeType": "text/markdown", "text": text}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(items: &[(&str, String)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(s, t)| ((*s).into(), t.clone()))
            .collect()
    }

    #[test]
    fn short_instructions_are_joined_whole() {
        let c = combine(&parts(&[
            ("a", "Use a.".into()),
            ("b", " ".into()),
            ("c", "Use c.".into()),
        ]));
        assert_eq!(c.text.as_deref(), Some("## a\nUse a.\n\n## c\nUse c."));
        assert!(c.cut.is_empty());
        assert_eq!(combine(&[]), Combined::default());
    }

    #[test]
    fn long_instructions_are_summarised_under_the_limit_and_short_ones_kept() {
        let long = "First rule. ".repeat(400);
        let c = combine(&parts(&[
            ("big", long.clone()),
            ("small", "Keep me whole.".into()),
            ("huge", "word ".repeat(2000)),
        ]));
        let text = c.text.unwrap();
        assert!(text.len() <= LIMIT, "{}", text.len());
        assert!(text.contains("## small\nKeep me whole."), "{text}");
        assert!(text.contains("## big\nFirst rule."));
        assert!(text.contains("mcpd://instructions/big"));
        assert!(text.contains("mcpd://instructions/huge"));
        assert_eq!(c.cut, ["big", "huge"]);
        // Sentences are kept whole.
        let big = text
            .split("## big\n")
            .nth(1)
            .unwrap()
            .split(" … ")
            .next()
            .unwrap();
        assert!(big.ends_with("First rule."), "{big}");
    }

    #[test]
    fn summaries_cut_on_char_boundaries() {
        let s = summarise(&"é".repeat(100), 51);
        assert!(s.len() <= 51);
        assert!(s.chars().all(|c| c == 'é'));
    }
}
