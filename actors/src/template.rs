//! Message templates: minijinja with HTML auto-escaping of every variable,
//! because messages go out in Telegram's HTML parse mode.

use minijinja::{AutoEscape, Environment};

/// A template that does not parse, with minijinja's description (which
/// carries the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template does not parse: {0}")]
pub struct TemplateError(pub String);

/// The environment every herald template is compiled in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env
}

/// Checks that `source` parses, so a broken template is refused when the
/// job is defined rather than when it is due.
pub fn check(source: &str) -> Result<(), TemplateError> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| TemplateError(describe(&e)))
}

fn describe(e: &minijinja::Error) -> String {
    match (e.detail(), e.line()) {
        (Some(detail), Some(line)) => format!("{detail} (template line {line})"),
        (Some(detail), None) => detail.to_string(),
        (None, Some(line)) => format!("{} (template line {line})", e.kind()),
        (None, None) => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unclosed_blocks_and_names_the_line() {
        assert!(check("Hello {{ name }}").is_ok());
        let err = check("line one\n{% if x %}unclosed")
            .unwrap_err()
            .to_string();
        assert!(err.contains("template line 2"), "{err}");
        assert!(check("{{ name ").is_err());
    }

    #[test]
    fn escapes_variables_as_html() {
        let env = environment();
        let tmpl = env.template_from_str("<b>{{ name }}</b>").unwrap();
        let out = tmpl.render(minijinja::context! { name => "<i>&" }).unwrap();
        assert_eq!(out, "<b>&lt;i&gt;&amp;</b>");
    }
}
