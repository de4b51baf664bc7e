//! Telegram HTML: the allowed-tags check and the long-message splitter.
//!
//! Messages go out with `parse_mode=HTML`, whose rules are narrower than
//! HTML's (Bot API, "HTML style"): a handful of tags, four named entities,
//! and a limit of [`MAX_MESSAGE_LEN`] UTF-16 code units of *visible* text.
//! [`check_html`] refuses what Telegram would refuse (or silently show as
//! literal text), [`visible_len`] counts what Telegram counts, and
//! [`split_message`] cuts a long message into parts that each fit and each
//! stay well-formed.
//!
//! All three share one small tokenizer ([`Tokenizer`]): text runs, entities
//! and tags, each with its byte span in the input.

use std::ops::Range;

/// Telegram's limit on a message's visible length, in UTF-16 code units.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Why a text is not valid Telegram HTML. Offsets are byte offsets into the
/// checked text; for attribute problems the offset is the tag's `<`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtmlError {
    /// A tag outside Telegram's list; `tag` is the name as written, with a
    /// leading '/' for a closing tag.
    #[error("tag <{tag}> at byte {offset} is not one Telegram allows")]
    TagNotAllowed { tag: String, offset: usize },
    #[error("attribute '{attribute}' not allowed on <{tag}> at byte {offset}")]
    AttributeNotAllowed {
        tag: String,
        attribute: String,
        offset: usize,
    },
    #[error("attribute {attribute}=\"{value}\" not allowed on <{tag}> at byte {offset}")]
    AttributeValueNotAllowed {
        tag: String,
        attribute: String,
        value: String,
        offset: usize,
    },
    #[error("attribute '{attribute}' on <{tag}> at byte {offset} needs a value")]
    AttributeValueMissing {
        tag: String,
        attribute: String,
        offset: usize,
    },
    #[error("<{tag}> at byte {offset} needs attribute '{attribute}'")]
    AttributeMissing {
        tag: String,
        attribute: String,
        offset: usize,
    },
    #[error("attribute '{attribute}' repeated on <{tag}> at byte {offset}")]
    AttributeRepeated {
        tag: String,
        attribute: String,
        offset: usize,
    },
    /// Telegram only honours a language on `<code>` directly inside `<pre>`.
    #[error("<{tag} class=\"language-...\"> at byte {offset} must be directly inside <pre>")]
    LanguageOutsidePre { tag: String, offset: usize },
    #[error("unclosed <{tag}> opened at byte {offset}")]
    Unclosed { tag: String, offset: usize },
    /// A closing tag that does not match the innermost open one (`open`).
    #[error("</{tag}> at byte {offset} closes <{open}>")]
    MismatchedClose {
        tag: String,
        open: String,
        offset: usize,
    },
    #[error("</{tag}> at byte {offset} closes nothing")]
    NothingToClose { tag: String, offset: usize },
    /// A `<` followed by a tag name that does not end in a well-formed tag.
    #[error("malformed tag at byte {offset}")]
    MalformedTag { offset: usize },
    /// A `<`, `>` or `&` in text that must be written as an entity.
    #[error("raw '{ch}' at byte {offset}")]
    Raw { ch: char, offset: usize },
    #[error("unknown entity '{entity}' at byte {offset}")]
    UnknownEntity { entity: String, offset: usize },
    /// A numeric reference to 0, a surrogate or beyond U+10FFFF.
    #[error("entity '{entity}' at byte {offset} is not a valid character")]
    InvalidCharacterReference { entity: String, offset: usize },
}

// ---------------------------------------------------------------------------
// Tokenizer

/// One lexical piece of the input and its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token<'a> {
    span: Range<usize>,
    kind: TokenKind<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind<'a> {
    /// Literal text: contains no `<`, `>` or `&`.
    Text,
    /// A character reference (`&amp;`, `&#128512;`) and what it stands for.
    Entity(char),
    Tag(Tag<'a>),
    /// One character Telegram would not accept where it stands (a raw `<`,
    /// `>` or `&`). [`check_html`] reports it; the lenient callers
    /// ([`visible_len`], [`split_message`]) treat it as a literal character
    /// so that invalid input never makes them panic.
    Stray(HtmlError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag<'a> {
    /// The name as written; compare with `eq_ignore_ascii_case`.
    name: &'a str,
    closing: bool,
    attributes: Vec<Attribute<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Attribute<'a> {
    name: &'a str,
    /// The raw value without its quotes; `None` for a boolean attribute.
    value: Option<&'a str>,
}

/// Splits HTML into [`Token`]s, covering every byte of the input in order.
struct Tokenizer<'a> {
    html: &'a str,
    pos: usize,
}

impl<'a> Tokenizer<'a> {
    fn new(html: &'a str) -> Self {
        Self { html, pos: 0 }
    }

    /// A one-character stray at the current position.
    fn stray(&self, error: HtmlError) -> (usize, TokenKind<'a>) {
        (self.pos + 1, TokenKind::Stray(error))
    }

    /// Lexes the tag starting at the `<` at `self.pos`; returns where the
    /// token ends and what it is.
    fn lex_tag(&self) -> (usize, TokenKind<'a>) {
        let bytes = self.html.as_bytes();
        let start = self.pos;
        let mut i = start + 1;
        let closing = bytes.get(i) == Some(&b'/');
        if closing {
            i += 1;
        }
        let name_start = i;
        i = skip_while(bytes, i, is_name_byte);
        let name = &self.html[name_start..i];
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            // `a < b`, `<3`, `</ x>`: not an attempt at a tag.
            return self.stray(HtmlError::Raw {
                ch: '<',
                offset: start,
            });
        }
        let malformed = || self.stray(HtmlError::MalformedTag { offset: start });
        let mut attributes = Vec::new();
        loop {
            let after_space = skip_while(bytes, i, |b| b.is_ascii_whitespace());
            let had_space = after_space > i;
            i = after_space;
            match bytes.get(i) {
                Some(b'>') => break,
                // Closing tags carry no attributes; attributes need a space before them.
                Some(_) if !closing && had_space => {}
                _ => return malformed(),
            }
            let attribute_start = i;
            i = skip_while(bytes, i, is_name_byte);
            if i == attribute_start {
                return malformed();
            }
            let name = &self.html[attribute_start..i];
            let after_space = skip_while(bytes, i, |b| b.is_ascii_whitespace());
            if bytes.get(after_space) != Some(&b'=') {
                attributes.push(Attribute { name, value: None });
                continue;
            }
            i = skip_while(bytes, after_space + 1, |b| b.is_ascii_whitespace());
            let value = match bytes.get(i) {
                Some(&quote) if quote == b'"' || quote == b'\'' => {
                    let value_start = i + 1;
                    let Some(length) = bytes[value_start..].iter().position(|&b| b == quote) else {
                        return malformed();
                    };
                    i = value_start + length + 1;
                    &self.html[value_start..value_start + length]
                }
                _ => {
                    // Unquoted, as Telegram accepts: letters, digits, '.', '-'.
                    let value_start = i;
                    i = skip_while(bytes, i, |b| {
                        b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
                    });
                    if i == value_start {
                        return malformed();
                    }
                    &self.html[value_start..i]
                }
            };
            attributes.push(Attribute {
                name,
                value: Some(value),
            });
        }
        let tag = Tag {
            name,
            closing,
            attributes,
        };
        (i + 1, TokenKind::Tag(tag))
    }

    /// Lexes the entity starting at the `&` at `self.pos`.
    fn lex_entity(&self) -> (usize, TokenKind<'a>) {
        let bytes = self.html.as_bytes();
        let start = self.pos;
        let raw_ampersand = || {
            self.stray(HtmlError::Raw {
                ch: '&',
                offset: start,
            })
        };
        let numeric = bytes.get(start + 1) == Some(&b'#');
        // Telegram, like td, only knows a lowercase 'x' for hexadecimal.
        let hexadecimal = numeric && bytes.get(start + 2) == Some(&b'x');
        let body_start = start + 1 + usize::from(numeric) + usize::from(hexadecimal);
        let body_end = match (numeric, hexadecimal) {
            (false, _) => skip_while(bytes, body_start, |b| b.is_ascii_alphanumeric()),
            (true, false) => skip_while(bytes, body_start, |b| b.is_ascii_digit()),
            (true, true) => skip_while(bytes, body_start, |b| b.is_ascii_hexdigit()),
        };
        if body_end == body_start || bytes.get(body_end) != Some(&b';') {
            return raw_ampersand();
        }
        let end = body_end + 1;
        let entity = &self.html[start..end];
        let body = &self.html[body_start..body_end];
        let decoded = if numeric {
            let radix = if hexadecimal { 16 } else { 10 };
            let code = u32::from_str_radix(body, radix).ok();
            match code.filter(|&c| c != 0).and_then(char::from_u32) {
                Some(ch) => ch,
                None => {
                    return self.stray(HtmlError::InvalidCharacterReference {
                        entity: entity.to_owned(),
                        offset: start,
                    });
                }
            }
        } else {
            match body {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                _ => {
                    return self.stray(HtmlError::UnknownEntity {
                        entity: entity.to_owned(),
                        offset: start,
                    });
                }
            }
        };
        (end, TokenKind::Entity(decoded))
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let rest = self.html.get(self.pos..).filter(|rest| !rest.is_empty())?;
        let (end, kind) = match rest.as_bytes()[0] {
            b'<' => self.lex_tag(),
            b'&' => self.lex_entity(),
            b'>' => self.stray(HtmlError::Raw {
                ch: '>',
                offset: self.pos,
            }),
            _ => {
                let length = rest.find(['<', '>', '&']).unwrap_or(rest.len());
                (self.pos + length, TokenKind::Text)
            }
        };
        let token = Token {
            span: self.pos..end,
            kind,
        };
        self.pos = end;
        Some(token)
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The first index at or after `from` whose byte fails `keep`.
fn skip_while(bytes: &[u8], from: usize, keep: impl Fn(u8) -> bool) -> usize {
    let skipped = bytes
        .get(from..)
        .map_or(0, |rest| rest.iter().take_while(|&&b| keep(b)).count());
    from + skipped
}

fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

// ---------------------------------------------------------------------------
// check_html

/// What an allowed attribute's value may be.
#[derive(Debug, Clone, Copy)]
enum ValueRule {
    /// Present without a value (`<blockquote expandable>`).
    Boolean,
    Any,
    Exactly(&'static str),
    /// A custom emoji id: a non-empty run of digits.
    Digits,
    /// `language-` followed by a name (`<code>` inside `<pre>`).
    Language,
}

#[derive(Debug, Clone, Copy)]
struct AttributeRule {
    name: &'static str,
    required: bool,
    value: ValueRule,
}

const NO_ATTRIBUTES: &[AttributeRule] = &[];

/// The attributes a tag may carry, or `None` if Telegram does not allow the
/// tag at all. `name` is lowercase.
fn attribute_rules(name: &str) -> Option<&'static [AttributeRule]> {
    let rules: &'static [AttributeRule] = match name {
        "b" | "strong" | "i" | "em" | "u" | "ins" | "s" | "strike" | "del" | "tg-spoiler"
        | "pre" => NO_ATTRIBUTES,
        "span" => &[AttributeRule {
            name: "class",
            required: true,
            value: ValueRule::Exactly("tg-spoiler"),
        }],
        "a" => &[AttributeRule {
            name: "href",
            required: true,
            value: ValueRule::Any,
        }],
        "tg-emoji" => &[AttributeRule {
            name: "emoji-id",
            required: true,
            value: ValueRule::Digits,
        }],
        "code" => &[AttributeRule {
            name: "class",
            required: false,
            value: ValueRule::Language,
        }],
        "blockquote" => &[AttributeRule {
            name: "expandable",
            required: false,
            value: ValueRule::Boolean,
        }],
        _ => return None,
    };
    Some(rules)
}

/// An element opened and not yet closed, while checking.
struct OpenElement<'a> {
    name: &'a str,
    offset: usize,
}

/// Checks that `html` is text Telegram accepts with `parse_mode=HTML`:
/// only its tags and attributes, properly nested and closed, and no raw
/// `<`, `>` or `&` outside tags. Returns the first problem found.
pub fn check_html(html: &str) -> Result<(), HtmlError> {
    let mut open: Vec<OpenElement<'_>> = Vec::new();
    for token in Tokenizer::new(html) {
        let offset = token.span.start;
        let tag = match token.kind {
            TokenKind::Text | TokenKind::Entity(_) => continue,
            TokenKind::Stray(error) => return Err(error),
            TokenKind::Tag(tag) => tag,
        };
        let lowercase = tag.name.to_ascii_lowercase();
        let Some(rules) = attribute_rules(&lowercase) else {
            let slash = if tag.closing { "/" } else { "" };
            return Err(HtmlError::TagNotAllowed {
                tag: format!("{slash}{}", tag.name),
                offset,
            });
        };
        if tag.closing {
            match open.pop() {
                None => {
                    return Err(HtmlError::NothingToClose {
                        tag: tag.name.to_owned(),
                        offset,
                    });
                }
                Some(innermost) if !innermost.name.eq_ignore_ascii_case(tag.name) => {
                    return Err(HtmlError::MismatchedClose {
                        tag: tag.name.to_owned(),
                        open: innermost.name.to_owned(),
                        offset,
                    });
                }
                Some(_) => {}
            }
        } else {
            let parent = open.last().map(|element| element.name);
            check_attributes(&tag, rules, parent, offset)?;
            open.push(OpenElement {
                name: tag.name,
                offset,
            });
        }
    }
    match open.last() {
        Some(innermost) => Err(HtmlError::Unclosed {
            tag: innermost.name.to_owned(),
            offset: innermost.offset,
        }),
        None => Ok(()),
    }
}

/// Checks an opening tag's attributes against `rules`; `parent` is the name
/// of the element it is directly inside, if any.
fn check_attributes(
    tag: &Tag<'_>,
    rules: &[AttributeRule],
    parent: Option<&str>,
    offset: usize,
) -> Result<(), HtmlError> {
    let tag_name = || tag.name.to_owned();
    for (index, attribute) in tag.attributes.iter().enumerate() {
        let attribute_name = || attribute.name.to_owned();
        let Some(rule) = rules
            .iter()
            .find(|rule| rule.name.eq_ignore_ascii_case(attribute.name))
        else {
            return Err(HtmlError::AttributeNotAllowed {
                tag: tag_name(),
                attribute: attribute_name(),
                offset,
            });
        };
        let repeated = tag.attributes[..index]
            .iter()
            .any(|earlier| earlier.name.eq_ignore_ascii_case(attribute.name));
        if repeated {
            return Err(HtmlError::AttributeRepeated {
                tag: tag_name(),
                attribute: attribute_name(),
                offset,
            });
        }
        let value_allowed = match (rule.value, attribute.value) {
            (ValueRule::Boolean, None) => true,
            (ValueRule::Boolean, Some(_)) => false,
            (_, None) => {
                return Err(HtmlError::AttributeValueMissing {
                    tag: tag_name(),
                    attribute: attribute_name(),
                    offset,
                });
            }
            (ValueRule::Any, Some(_)) => true,
            (ValueRule::Exactly(expected), Some(value)) => value == expected,
            (ValueRule::Digits, Some(value)) => {
                !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
            }
            (ValueRule::Language, Some(value)) => value
                .strip_prefix("language-")
                .is_some_and(|language| !language.is_empty()),
        };
        if !value_allowed {
            return Err(HtmlError::AttributeValueNotAllowed {
                tag: tag_name(),
                attribute: attribute_name(),
                value: attribute.value.unwrap_or_default().to_owned(),
                offset,
            });
        }
        let inside_pre = parent.is_some_and(|name| name.eq_ignore_ascii_case("pre"));
        if matches!(rule.value, ValueRule::Language) && !inside_pre {
            return Err(HtmlError::LanguageOutsidePre {
                tag: tag_name(),
                offset,
            });
        }
    }
    for rule in rules.iter().filter(|rule| rule.required) {
        let present = tag
            .attributes
            .iter()
            .any(|attribute| attribute.name.eq_ignore_ascii_case(rule.name));
        if !present {
            return Err(HtmlError::AttributeMissing {
                tag: tag_name(),
                attribute: rule.name.to_owned(),
                offset,
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// visible_len

/// The length Telegram counts against [`MAX_MESSAGE_LEN`]: UTF-16 code
/// units of the text once tags are removed and entities decoded. Meant for
/// valid input; on invalid input it counts offending characters literally.
pub fn visible_len(html: &str) -> usize {
    Tokenizer::new(html)
        .map(|token| match token.kind {
            TokenKind::Text | TokenKind::Stray(_) => utf16_len(&html[token.span]),
            TokenKind::Entity(ch) => ch.len_utf16(),
            TokenKind::Tag(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------
// split_message

/// The indivisible units [`split_message`] works with: a cut may fall
/// between two atoms, never inside one, so tags, entities and characters
/// (surrogate pairs included) stay whole.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    /// One visible character: from text, an entity, or a stray. `content`
    /// is false for whitespace, which alone does not make a part worth
    /// sending.
    Char {
        span: Range<usize>,
        width: usize,
        content: bool,
    },
    /// A run of spaces, tabs and newlines inside text: where a cut prefers
    /// to fall. The run is dropped when cut at.
    Space { span: Range<usize>, newlines: usize },
    /// An opening tag; `name` is lowercase.
    Open { span: Range<usize>, name: String },
    /// A closing tag; `name` is lowercase.
    Close { span: Range<usize>, name: String },
}

impl Atom {
    fn span(&self) -> Range<usize> {
        match self {
            Atom::Char { span, .. }
            | Atom::Space { span, .. }
            | Atom::Open { span, .. }
            | Atom::Close { span, .. } => span.clone(),
        }
    }

    fn is_content(&self) -> bool {
        matches!(self, Atom::Char { content: true, .. })
    }
}

/// What kind of whitespace run a cut falls in, from worst to best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BreakKind {
    Space,
    Line,
    Paragraph,
}

impl BreakKind {
    fn of_run(newlines: usize) -> Self {
        match newlines {
            0 => BreakKind::Space,
            1 => BreakKind::Line,
            _ => BreakKind::Paragraph,
        }
    }
}

/// Whitespace a cut may fall in. Deliberately ASCII only: cutting at a
/// no-break space would defeat its purpose.
fn is_break_space(ch: char) -> bool {
    matches!(ch, ' ' | '\t' | '\n' | '\r')
}

fn atomize(html: &str) -> Vec<Atom> {
    let mut atoms = Vec::new();
    for token in Tokenizer::new(html) {
        let span = token.span;
        match token.kind {
            TokenKind::Text => push_text_atoms(&mut atoms, html, span),
            TokenKind::Entity(ch) | TokenKind::Stray(HtmlError::Raw { ch, .. }) => {
                atoms.push(Atom::Char {
                    span,
                    width: ch.len_utf16(),
                    content: !ch.is_whitespace(),
                })
            }
            // Every other stray is one ASCII character ('<' or '&').
            TokenKind::Stray(_) => atoms.push(Atom::Char {
                span,
                width: 1,
                content: true,
            }),
            TokenKind::Tag(tag) => {
                let name = tag.name.to_ascii_lowercase();
                atoms.push(if tag.closing {
                    Atom::Close { span, name }
                } else {
                    Atom::Open { span, name }
                });
            }
        }
    }
    atoms
}

fn push_text_atoms(atoms: &mut Vec<Atom>, html: &str, text_span: Range<usize>) {
    let base = text_span.start;
    let mut chars = html[text_span].char_indices().peekable();
    while let Some((offset, ch)) = chars.next() {
        let start = base + offset;
        if !is_break_space(ch) {
            atoms.push(Atom::Char {
                span: start..start + ch.len_utf8(),
                width: ch.len_utf16(),
                content: !ch.is_whitespace(),
            });
            continue;
        }
        let mut end = start + 1;
        let mut newlines = usize::from(ch == '\n');
        while let Some(&(offset, next)) = chars.peek() {
            if !is_break_space(next) {
                break;
            }
            end = base + offset + 1;
            newlines += usize::from(next == '\n');
            chars.next();
        }
        atoms.push(Atom::Space {
            span: start..end,
            newlines,
        });
    }
}

/// The lowercase name of the element opened by atom `index`, if it opens one.
fn opened_name(atoms: &[Atom], index: usize) -> Option<&str> {
    match &atoms[index] {
        Atom::Open { name, .. } => Some(name),
        _ => None,
    }
}

/// Applies atom `index` to a stack of open elements (indices of their
/// `Open` atoms). Tolerates bad nesting: a close that does not match the
/// innermost element is ignored.
fn apply_to_stack(atoms: &[Atom], stack: &mut Vec<usize>, index: usize) {
    match &atoms[index] {
        Atom::Open { .. } => stack.push(index),
        Atom::Close { name, .. } => {
            let innermost = stack.last().and_then(|&open| opened_name(atoms, open));
            if innermost == Some(name.as_str()) {
                stack.pop();
            }
        }
        Atom::Char { .. } | Atom::Space { .. } => {}
    }
}

fn inside_custom_emoji(atoms: &[Atom], stack: &[usize]) -> bool {
    stack
        .iter()
        .any(|&open| opened_name(atoms, open) == Some("tg-emoji"))
}

/// Where the part starting at atom `start` (with `stack` open) ends: the
/// index of the first atom of the next part, or `atoms.len()` if the rest
/// fits. Prefers the latest whitespace run of the best kind, else the
/// latest point between characters; the part always gets at least one
/// non-whitespace character, so every call makes progress.
fn part_end(atoms: &[Atom], start: usize, stack: &[usize], limit: usize) -> usize {
    let mut stack = stack.to_vec();
    let mut width = 0;
    let mut has_content = false;
    let mut best_break: Option<(BreakKind, usize)> = None;
    // Just after the last character (and any closing tags after it).
    let mut hard_cut: Option<usize> = None;
    let mut after_char = false;
    for (index, atom) in atoms.iter().enumerate().skip(start) {
        match atom {
            Atom::Space { span, newlines } => {
                after_char = false;
                if !has_content {
                    // Leading whitespace is trimmed from the part: free.
                    continue;
                }
                let kind = BreakKind::of_run(*newlines);
                if best_break.is_none_or(|(best, _)| kind >= best) {
                    best_break = Some((kind, end_before_opening_tags(atoms, index)));
                }
                width += span.len();
            }
            Atom::Open { .. } => {
                apply_to_stack(atoms, &mut stack, index);
                after_char = false;
            }
            Atom::Close { .. } => {
                apply_to_stack(atoms, &mut stack, index);
                if after_char && has_content && !inside_custom_emoji(atoms, &stack) {
                    hard_cut = Some(index + 1);
                }
            }
            Atom::Char {
                width: char_width,
                content,
                ..
            } => {
                if has_content && width + char_width > limit {
                    let cut = best_break.map(|(_, end)| end).or(hard_cut);
                    if let Some(end) = cut {
                        return end;
                    }
                    // Only inside a leading <tg-emoji>: an emoji must stay whole.
                }
                width += char_width;
                has_content |= content;
                after_char = true;
                if has_content && !inside_custom_emoji(atoms, &stack) {
                    hard_cut = Some(index + 1);
                }
            }
        }
    }
    atoms.len()
}

/// A cut at the whitespace run `space` leaves opening tags just before it
/// to the next part, so a part does not end in an empty `<b></b>`.
fn end_before_opening_tags(atoms: &[Atom], space: usize) -> usize {
    let opening_tags = atoms[..space]
        .iter()
        .rev()
        .take_while(|atom| matches!(atom, Atom::Open { .. }))
        .count();
    space - opening_tags
}

/// The text of the part made of `atoms[range]`: the elements open at its
/// start reopened with their original tags, its atoms without whitespace
/// runs at either end, then closing tags for what is still open.
fn render_part(html: &str, atoms: &[Atom], range: Range<usize>, open_at_start: &[usize]) -> String {
    let mut part = String::new();
    for &open in open_at_start {
        part.push_str(&html[atoms[open].span()]);
    }
    let first_content = range.clone().find(|&index| atoms[index].is_content());
    let last_content = range.clone().rev().find(|&index| atoms[index].is_content());
    let mut stack = open_at_start.to_vec();
    for index in range {
        apply_to_stack(atoms, &mut stack, index);
        let outside_content = first_content.is_none_or(|first| index < first)
            || last_content.is_none_or(|last| index > last);
        if matches!(atoms[index], Atom::Space { .. }) && outside_content {
            continue;
        }
        part.push_str(&html[atoms[index].span()]);
    }
    for name in stack
        .iter()
        .rev()
        .filter_map(|&open| opened_name(atoms, open))
    {
        part.push_str(&format!("</{name}>"));
    }
    part
}

/// Splits a (valid) message into parts of at most `limit` visible UTF-16
/// code units, for Telegram's [`MAX_MESSAGE_LEN`].
///
/// Cuts prefer paragraph breaks (`\n\n`), then line breaks, then spaces,
/// and only then fall between any two characters; never inside a tag, an
/// entity or a character. The whitespace cut at is dropped, and parts are
/// trimmed of whitespace at their ends (Telegram trims messages anyway).
/// Elements open at a cut are closed at the end of the part and reopened,
/// with their original opening tags, at the start of the next, so each
/// part of a valid message is valid.
///
/// A message that fits is returned unchanged as the only part; a message
/// with no visible non-whitespace text yields no parts. A part may exceed
/// `limit` only when a single character (or a custom emoji) does.
pub fn split_message(html: &str, limit: usize) -> Vec<String> {
    let atoms = atomize(html);
    if !atoms.iter().any(Atom::is_content) {
        return Vec::new();
    }
    if visible_len(html) <= limit {
        return vec![html.to_owned()];
    }
    let mut parts = Vec::new();
    let mut start = 0;
    let mut open_at_start: Vec<usize> = Vec::new();
    while start < atoms.len() {
        let end = part_end(&atoms, start, &open_at_start, limit);
        // Only a tail after the last cut can lack content (closing tags,
        // whitespace); it is not worth a message.
        if atoms[start..end].iter().any(Atom::is_content) {
            parts.push(render_part(html, &atoms, start..end, &open_at_start));
        }
        for index in start..end {
            apply_to_stack(&atoms, &mut open_at_start, index);
        }
        start = end;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The text Telegram shows: tags removed, entities decoded.
    fn visible_text(html: &str) -> String {
        Tokenizer::new(html)
            .map(|token| match token.kind {
                TokenKind::Text | TokenKind::Stray(_) => html[token.span].to_owned(),
                TokenKind::Entity(ch) => ch.to_string(),
                TokenKind::Tag(_) => String::new(),
            })
            .collect()
    }

    fn without_whitespace(text: &str) -> String {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    }

    fn error(html: &str) -> String {
        match check_html(html) {
            Ok(()) => panic!("{html:?} was accepted"),
            Err(error) => error.to_string(),
        }
    }

    /// Every part is valid, non-blank and within `max(limit, 2)`.
    fn assert_parts_sound(parts: &[String], limit: usize) {
        for part in parts {
            assert_eq!(check_html(part), Ok(()), "part {part:?}");
            assert!(!visible_text(part).trim().is_empty(), "blank part {part:?}");
            assert!(
                visible_len(part) <= limit.max(2),
                "part {part:?} is {} long, limit {limit}",
                visible_len(part)
            );
        }
    }

    // --- check_html: accepted ---

    #[test]
    fn accepts_every_allowed_tag() {
        for tag in [
            "b",
            "strong",
            "i",
            "em",
            "u",
            "ins",
            "s",
            "strike",
            "del",
            "tg-spoiler",
            "code",
            "pre",
            "blockquote",
        ] {
            let html = format!("x <{tag}>y</{tag}> z");
            assert_eq!(check_html(&html), Ok(()), "{html}");
        }
    }

    #[test]
    fn accepts_every_allowed_attribute() {
        for html in [
            r#"<span class="tg-spoiler">secret</span>"#,
            r#"<a href="https://example.com/?a=1&amp;b=2">link</a>"#,
            r#"<a href='https://example.com'>single quotes</a>"#,
            r#"<a href = "tg://user?id=1">spaces around '='</a>"#,
            r#"<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>"#,
            r#"<pre><code class="language-rust">fn main() {}</code></pre>"#,
            "<blockquote expandable>long quote</blockquote>",
            "<blockquote>plain quote</blockquote>",
            "<pre>preformatted</pre>",
            "<code>inline</code>",
        ] {
            assert_eq!(check_html(html), Ok(()), "{html}");
        }
    }

    #[test]
    fn accepts_nesting_case_insensitive_names_and_plain_text() {
        for html in [
            "",
            "plain text, no markup at all",
            "<b>bold <i>bold italic <u>and underlined</u></i></b>",
            "<B>shouting</b> <A HREF=\"x\">link</a>",
            "<b >spaced</b >",
            "line one\nline two\n\nparagraph",
        ] {
            assert_eq!(check_html(html), Ok(()), "{html}");
        }
    }

    #[test]
    fn accepts_supported_entities() {
        assert_eq!(
            check_html("&lt;tag&gt; &amp; &quot;quoted&quot; &#169; &#x1F600; &#128512;"),
            Ok(())
        );
    }

    // --- check_html: refused ---

    #[test]
    fn refuses_tags_telegram_does_not_know() {
        assert_eq!(
            error("hello world <div>x</div>"),
            "tag <div> at byte 12 is not one Telegram allows"
        );
        assert_eq!(
            error("a<br>b"),
            "tag <br> at byte 1 is not one Telegram allows"
        );
        assert_eq!(
            error("x</p>"),
            "tag </p> at byte 1 is not one Telegram allows"
        );
        assert_eq!(
            check_html("<script>"),
            Err(HtmlError::TagNotAllowed {
                tag: "script".into(),
                offset: 0
            })
        );
    }

    #[test]
    fn refuses_attributes_telegram_does_not_know() {
        assert_eq!(
            error(r#"<a onclick="x()" href="y">z</a>"#),
            "attribute 'onclick' not allowed on <a> at byte 0"
        );
        assert_eq!(
            error(r#"ok <b class="x">z</b>"#),
            "attribute 'class' not allowed on <b> at byte 3"
        );
        assert_eq!(
            error(r#"<span style="color:red">z</span>"#),
            "attribute 'style' not allowed on <span> at byte 0"
        );
        assert_eq!(
            error(r#"<blockquote cite="x">z</blockquote>"#),
            "attribute 'cite' not allowed on <blockquote> at byte 0"
        );
    }

    #[test]
    fn refuses_wrong_or_missing_attribute_values() {
        assert_eq!(
            error(r#"<span class="red">z</span>"#),
            r#"attribute class="red" not allowed on <span> at byte 0"#
        );
        assert_eq!(
            error("<span>z</span>"),
            "<span> at byte 0 needs attribute 'class'"
        );
        assert_eq!(error("<a>z</a>"), "<a> at byte 0 needs attribute 'href'");
        assert_eq!(
            error("<a href>z</a>"),
            "attribute 'href' on <a> at byte 0 needs a value"
        );
        assert_eq!(
            error(r#"<a href="x" href="y">z</a>"#),
            "attribute 'href' repeated on <a> at byte 0"
        );
        assert_eq!(
            error(r#"<tg-emoji emoji-id="smile">😀</tg-emoji>"#),
            r#"attribute emoji-id="smile" not allowed on <tg-emoji> at byte 0"#
        );
        assert_eq!(
            error("<tg-emoji>😀</tg-emoji>"),
            "<tg-emoji> at byte 0 needs attribute 'emoji-id'"
        );
        assert_eq!(
            error(r#"<blockquote expandable="yes">z</blockquote>"#),
            r#"attribute expandable="yes" not allowed on <blockquote> at byte 0"#
        );
        assert_eq!(
            error(r#"<pre><code class="rust">z</code></pre>"#),
            r#"attribute class="rust" not allowed on <code> at byte 5"#
        );
    }

    #[test]
    fn refuses_a_language_outside_pre() {
        let expected = r#"<code class="language-...">"#;
        let message = error(r#"<code class="language-rust">z</code>"#);
        assert!(message.starts_with(expected), "{message}");
        assert_eq!(
            error(r#"<pre><b><code class="language-rust">z</code></b></pre>"#),
            r#"<code class="language-..."> at byte 8 must be directly inside <pre>"#
        );
    }

    #[test]
    fn refuses_bad_nesting_and_unclosed_tags() {
        assert_eq!(error("ab <b>cd"), "unclosed <b> opened at byte 3");
        assert_eq!(
            error("<b>0123456789abcdefg</i></b>"),
            "</i> at byte 20 closes <b>"
        );
        assert_eq!(error("<b><i>x</b></i>"), "</b> at byte 7 closes <i>");
        assert_eq!(error("x</b>"), "</b> at byte 1 closes nothing");
        assert_eq!(error("<b>x</b></b>"), "</b> at byte 8 closes nothing");
    }

    #[test]
    fn refuses_raw_markup_characters() {
        assert_eq!(error("a b c< d"), "raw '<' at byte 5");
        assert_eq!(error("1 <3"), "raw '<' at byte 2");
        assert_eq!(error("a > b"), "raw '>' at byte 2");
        assert_eq!(error("fish & chips"), "raw '&' at byte 5");
        assert_eq!(error("&amp without semicolon"), "raw '&' at byte 0");
        assert_eq!(error("&#x;"), "raw '&' at byte 0");
        assert_eq!(check_html("<"), Err(HtmlError::Raw { ch: '<', offset: 0 }));
    }

    #[test]
    fn refuses_unknown_and_invalid_entities() {
        assert_eq!(error("hello, &nbsp;"), "unknown entity '&nbsp;' at byte 7");
        assert_eq!(error("&AMP;"), "unknown entity '&AMP;' at byte 0");
        assert_eq!(
            error("&#0;"),
            "entity '&#0;' at byte 0 is not a valid character"
        );
        assert_eq!(
            error("&#xD800;"),
            "entity '&#xD800;' at byte 0 is not a valid character"
        );
        assert_eq!(
            error("&#99999999999;"),
            "entity '&#99999999999;' at byte 0 is not a valid character"
        );
        // Telegram only reads a lowercase 'x'.
        assert_eq!(error("&#X41;"), "raw '&' at byte 0");
    }

    #[test]
    fn refuses_malformed_tags() {
        assert_eq!(error("x <b"), "malformed tag at byte 2");
        assert_eq!(error(r#"<a href="x>z</a>"#), "malformed tag at byte 0");
        assert_eq!(
            error(r#"<a href="x"title="y">z</a>"#),
            "malformed tag at byte 0"
        );
        assert_eq!(error("<b/>"), "malformed tag at byte 0");
        assert_eq!(error("</b x>"), "malformed tag at byte 0");
    }

    // --- visible_len ---

    #[test]
    fn visible_len_ignores_tags_and_decodes_entities() {
        assert_eq!(visible_len(""), 0);
        assert_eq!(visible_len("hello"), 5);
        assert_eq!(visible_len("<b>hello</b>"), 5);
        assert_eq!(
            visible_len(r#"<a href="https://example.com/long">x</a>"#),
            1
        );
        assert_eq!(visible_len("&lt;&gt;&amp;&quot;"), 4);
        assert_eq!(visible_len("&#65;&#x42;"), 2);
        assert_eq!(visible_len("a\n\nb"), 4);
    }

    #[test]
    fn visible_len_counts_utf16_code_units() {
        assert_eq!(visible_len("😀"), 2);
        assert_eq!(visible_len("&#128512;"), 2);
        assert_eq!(visible_len("<b>😀x</b>"), 3);
        assert_eq!(visible_len("é"), 1);
        assert_eq!(visible_len("日本"), 2);
    }

    #[test]
    fn visible_len_does_not_panic_on_invalid_input() {
        assert_eq!(visible_len("a < b"), 5);
        assert_eq!(visible_len("&nbsp;"), 6);
        assert_eq!(visible_len("<b"), 2);
        assert_eq!(visible_len("&"), 1);
        assert_eq!(visible_len("<a href='x"), 10);
    }

    // --- split_message ---

    #[test]
    fn a_message_that_fits_is_returned_unchanged() {
        let html = "  <b>hello</b> &amp; world\n";
        assert_eq!(split_message(html, MAX_MESSAGE_LEN), vec![html.to_owned()]);
        assert_eq!(split_message("abc", 3), vec!["abc".to_owned()]);
    }

    #[test]
    fn a_blank_message_yields_no_parts() {
        assert!(split_message("", 10).is_empty());
        assert!(split_message(" \n\n ", 1).is_empty());
        assert!(split_message("<b> </b>", 0).is_empty());
    }

    #[test]
    fn prefers_paragraphs_then_lines_then_spaces_and_the_latest_of_them() {
        assert_eq!(split_message("aa\n\nbb\ncc dd", 10), ["aa", "bb\ncc dd"]);
        assert_eq!(split_message("aa bb\ncc dd", 8), ["aa bb", "cc dd"]);
        assert_eq!(split_message("aa bb cc dd", 8), ["aa bb cc", "dd"]);
        assert_eq!(split_message("aa\n\nbb\n\ncc dd", 9), ["aa\n\nbb", "cc dd"]);
    }

    #[test]
    fn drops_the_whitespace_cut_at() {
        assert_eq!(split_message("one \n\n two", 4), ["one", "two"]);
        assert_eq!(split_message("one\n\n\n\ntwo\n", 5), ["one", "two"]);
    }

    #[test]
    fn reopens_elements_with_their_original_tags() {
        assert_eq!(
            split_message("<b>aaa bbb</b>", 3),
            ["<b>aaa</b>", "<b>bbb</b>"]
        );
        assert_eq!(
            split_message("<A HREF='u'>aaa <i>bbb</i></A>", 3),
            ["<A HREF='u'>aaa</a>", "<A HREF='u'><i>bbb</i></A>"]
        );
        let code = "<pre><code class=\"language-rust\">aaa\nbbb</code></pre>";
        let parts = split_message(code, 3);
        assert_eq!(
            parts,
            [
                "<pre><code class=\"language-rust\">aaa</code></pre>",
                "<pre><code class=\"language-rust\">bbb</code></pre>"
            ]
        );
        assert_parts_sound(&parts, 3);
    }

    #[test]
    fn leaves_opening_tags_before_a_cut_to_the_next_part() {
        assert_eq!(split_message("aaa <b>bbb</b>", 3), ["aaa", "<b>bbb</b>"]);
        assert_eq!(split_message("aaa<b>bbb</b>", 3), ["aaa", "<b>bbb</b>"]);
        assert_eq!(split_message("<b>aaa</b>bbb", 3), ["<b>aaa</b>", "bbb"]);
    }

    #[test]
    fn hard_cuts_a_long_line_without_spaces() {
        let line = "x".repeat(10_000);
        let parts = split_message(&line, MAX_MESSAGE_LEN);
        let lengths: Vec<usize> = parts.iter().map(|part| visible_len(part)).collect();
        assert_eq!(lengths, [4096, 4096, 1808]);
        assert_eq!(parts.concat(), line);
    }

    #[test]
    fn never_cuts_inside_an_entity() {
        assert_eq!(split_message("xxx&amp;yyy", 4), ["xxx&amp;", "yyy"]);
        assert_eq!(split_message("xxx&amp;yyy", 3), ["xxx", "&amp;yy", "y"]);
        let html = "a&amp;b&lt;c&#x1F600;d".repeat(50);
        for limit in 1..12 {
            let parts = split_message(&html, limit);
            assert_parts_sound(&parts, limit);
            let joined: String = parts.iter().map(|part| visible_text(part)).collect();
            assert_eq!(joined, visible_text(&html), "limit {limit}");
        }
    }

    #[test]
    fn never_splits_a_surrogate_pair_and_always_makes_progress() {
        assert_eq!(split_message("😀😀😀", 3), ["😀", "😀", "😀"]);
        assert_eq!(split_message("😀😀😀", 1), ["😀", "😀", "😀"]);
        assert_eq!(split_message("abc", 0), ["a", "b", "c"]);
        assert_eq!(split_message("<b>ab</b>", 0), ["<b>a</b>", "<b>b</b>"]);
    }

    #[test]
    fn keeps_a_custom_emoji_whole() {
        let emoji = r#"<tg-emoji emoji-id="5368324170671202286">👍🏽</tg-emoji>"#;
        let parts = split_message(&format!("{emoji}b"), 1);
        assert_eq!(parts, [emoji.to_owned(), "b".to_owned()]);
    }

    #[test]
    fn does_not_panic_on_invalid_input() {
        for html in [
            "a < b c",
            "<b>x y z",
            "x y</i> z",
            "&nbsp; &nbsp;",
            "<a href='",
            "</b></b>",
        ] {
            for limit in 0..4 {
                let parts = split_message(html, limit);
                assert!(parts.iter().all(|part| !part.trim().is_empty()), "{html:?}");
            }
        }
    }

    /// A long message of paragraphs with formatting that spans paragraph
    /// breaks, as digests produce. All of it is inside `<i>`, so every cut
    /// falls inside an element.
    fn long_digest() -> String {
        let sentence = "The quick brown fox jumps over the lazy dog &amp; keeps running. ";
        let body = sentence.repeat(4);
        let body = body.trim_end();
        let mut html = String::from("<i>");
        let mut paragraph = 0;
        while visible_len(&html) < 12_000 {
            match paragraph % 4 {
                // Bold and links that span a paragraph break.
                0 => html.push_str(&format!("<b>{body}\n\n{body}</b>")),
                1 => {
                    let href = format!("https://example.com/?p={paragraph}&amp;q=1");
                    html.push_str(&format!("<a href=\"{href}\"><u>{body}\n\n{body}</u></a>"));
                }
                2 => html.push_str(&format!("{body} 😀")),
                _ => html.push_str(&format!("<blockquote>{body}\nline two</blockquote>")),
            }
            html.push_str("\n\n");
            paragraph += 1;
        }
        format!("{}</i>", html.trim_end())
    }

    #[test]
    fn splits_a_long_digest_at_paragraphs() {
        let html = long_digest();
        assert_eq!(check_html(&html), Ok(()));
        let total = visible_len(&html);
        assert!((12_000..12_600).contains(&total), "{total}");

        let parts = split_message(&html, MAX_MESSAGE_LEN);
        assert!((3..=4).contains(&parts.len()), "{} parts", parts.len());
        assert_parts_sound(&parts, MAX_MESSAGE_LEN);
        // Every cut fell at a "\n\n", which is all that was dropped.
        let texts: Vec<String> = parts.iter().map(|part| visible_text(part)).collect();
        assert_eq!(texts.join("\n\n"), visible_text(&html));
        // The <i> open at every cut was closed and reopened.
        let last = parts.len() - 1;
        for (index, part) in parts.iter().enumerate() {
            assert!(part.starts_with("<i>"), "part {index}");
            assert!(part.ends_with("</i>"), "part {index}");
            assert!(
                index == last || visible_len(part) > MAX_MESSAGE_LEN / 2,
                "part {index}"
            );
        }
    }

    #[test]
    fn splits_inside_formatting_that_spans_a_paragraph_break() {
        let html = "<b>para one\n\npara <a href=\"https://x.y/\">two\n\nthree</a></b>";
        assert_eq!(
            split_message(html, 10),
            [
                "<b>para one</b>",
                "<b>para <a href=\"https://x.y/\">two</a></b>",
                "<b><a href=\"https://x.y/\">three</a></b>"
            ]
        );
    }

    /// A link whose href holds an entity, for the property test.
    const LINK: &str = "https://x.y/?a=1&amp;b=2";

    fn piece() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("word".to_owned()),
            Just("héllo".to_owned()),
            Just("x".to_owned()),
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just("\n\n".to_owned()),
            Just("&amp;".to_owned()),
            Just("😀".to_owned()),
        ];
        let fragment = prop::collection::vec(leaf.clone(), 0..8).prop_map(|leaves| leaves.concat());
        prop_oneof![
            4 => leaf,
            1 => fragment.clone().prop_map(|inner| format!("<b>{inner}</b>")),
            1 => fragment.clone().prop_map(|inner| format!("<i><b>{inner}</b> {inner}</i>")),
            1 => fragment.prop_map(|inner| format!("<a href=\"{LINK}\">{inner}</a>")),
        ]
    }

    proptest! {
        #[test]
        fn parts_are_valid_fit_and_keep_all_text(
            pieces in prop::collection::vec(piece(), 0..60),
            limit in 1usize..300,
        ) {
            let html = pieces.concat();
            prop_assert_eq!(check_html(&html), Ok(()));
            let parts = split_message(&html, limit);
            for part in &parts {
                prop_assert_eq!(check_html(part), Ok(()), "part {:?}", part);
                prop_assert!(!visible_text(part).trim().is_empty(), "blank part {:?}", part);
                prop_assert!(visible_len(part) <= limit.max(2), "part {:?} over {}", part, limit);
            }
            let joined: String = parts.iter().map(|part| visible_text(part)).collect();
            prop_assert_eq!(without_whitespace(&joined), without_whitespace(&visible_text(&html)));
            if visible_len(&html) <= limit && !parts.is_empty() {
                prop_assert_eq!(parts, vec![html]);
            }
        }
    }
}
