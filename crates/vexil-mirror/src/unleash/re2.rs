//! How Node's engine (re2js: RE2 syntax) reads a `matches` pattern that Vexil, and yggdrasil,
//! compile with Rust's regex. The pattern's syntax tree is walked once per export.

use regex_syntax::ast::{
    self, Assertion, AssertionKind, Ast, ClassSetBinaryOp, ClassSetItem, ClassUnicode,
    ClassUnicodeKind, Flag, Flags, FlagsItemKind, GroupKind, HexLiteralKind, LiteralKind,
    RepetitionKind, RepetitionRange,
};

/// RE2 rejects counted repetitions above this (`x{1001}`).
const RE2_MAX_REPEAT: u32 = 1000;

/// What RE2 makes of a pattern Rust's regex accepts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Reading {
    /// The same for every input.
    Same,
    /// `\d`, `\w`, `\s`, `\b`: Unicode in Rust's regex, ASCII in RE2, so only inputs with
    /// non-ASCII digits, letters or spaces differ.
    AsciiClasses,
    /// A construct RE2 rejects (the condition is then false for every input) or reads as
    /// something else; the text names it.
    Unsupported(String),
}

/// Reads `pattern` as RE2 would, compared with Rust's regex.
pub(super) fn reading(pattern: &str) -> Reading {
    let parsed = ast::parse::ParserBuilder::new()
        .nest_limit(250)
        .build()
        .parse(pattern);
    let Ok(tree) = parsed else {
        return Reading::Unsupported("syntax Rust's own parser does not re-read".to_owned());
    };
    let walker = Walker {
        pattern,
        ascii: false,
    };
    match ast::visit(&tree, walker) {
        Ok(reading) | Err(reading) => reading,
    }
}

struct Walker<'p> {
    pattern: &'p str,
    /// Seen a class RE2 reads as ASCII.
    ascii: bool,
}

impl Walker<'_> {
    fn refuse(&self, what: impl Into<String>) -> Result<(), Reading> {
        Err(Reading::Unsupported(what.into()))
    }

    fn flags(&mut self, flags: &Flags) -> Result<(), Reading> {
        for item in &flags.items {
            match item.kind {
                FlagsItemKind::Negation
                | FlagsItemKind::Flag(
                    Flag::CaseInsensitive
                    | Flag::MultiLine
                    | Flag::DotMatchesNewLine
                    | Flag::SwapGreed,
                ) => {}
                FlagsItemKind::Flag(Flag::Unicode) => return self.refuse("the flag `u`"),
                FlagsItemKind::Flag(Flag::CRLF) => return self.refuse("the flag `R`"),
                FlagsItemKind::Flag(Flag::IgnoreWhitespace) => {
                    return self.refuse("the flag `x`");
                }
            }
        }
        Ok(())
    }

    fn unicode(&mut self, class: &ClassUnicode) -> Result<(), Reading> {
        match &class.kind {
            ClassUnicodeKind::OneLetter(c) if "CLMNPSZ".contains(*c) => Ok(()),
            ClassUnicodeKind::Named(name) if re2_knows(name) => Ok(()),
            ClassUnicodeKind::OneLetter(c) => self.refuse(format!("the Unicode class `\\p{c}`")),
            ClassUnicodeKind::Named(name) => self.refuse(format!(
                "the Unicode property `{name}` (RE2 knows general categories and scripts by their exact names)"
            )),
            ClassUnicodeKind::NamedValue { .. } => {
                self.refuse("a Unicode class written `\\p{name=value}`")
            }
        }
    }

    fn literal(&mut self, kind: &LiteralKind) -> Result<(), Reading> {
        match kind {
            LiteralKind::HexFixed(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong)
            | LiteralKind::HexBrace(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong) => {
                self.refuse("an escape `\\u` or `\\U` (RE2 writes `\\x{...}`)")
            }
            LiteralKind::Octal => self.refuse("an octal escape"),
            _ => Ok(()),
        }
    }
}

/// General categories (one or two letters) and the common scripts, as RE2 spells them.
fn re2_knows(name: &str) -> bool {
    const SCRIPTS: [&str; 16] = [
        "Any",
        "Arabic",
        "Armenian",
        "Common",
        "Cyrillic",
        "Devanagari",
        "Georgian",
        "Greek",
        "Han",
        "Hangul",
        "Hebrew",
        "Hiragana",
        "Inherited",
        "Katakana",
        "Latin",
        "Thai",
    ];
    let mut chars = name.chars();
    let category = match (chars.next(), chars.next(), chars.next()) {
        (Some(major), None, None) => "CLMNPSZ".contains(major),
        (Some(major), Some(minor), None) => "CLMNPSZ".contains(major) && minor.is_ascii_lowercase(),
        _ => false,
    };
    category || SCRIPTS.contains(&name)
}

impl ast::Visitor for Walker<'_> {
    type Output = Reading;
    type Err = Reading;

    fn finish(self) -> Result<Reading, Reading> {
        Ok(if self.ascii {
            Reading::AsciiClasses
        } else {
            Reading::Same
        })
    }

    fn visit_pre(&mut self, tree: &Ast) -> Result<(), Reading> {
        match tree {
            Ast::Flags(set) => self.flags(&set.flags),
            Ast::Group(group) => match &group.kind {
                GroupKind::NonCapturing(flags) => self.flags(flags),
                GroupKind::CaptureName {
                    starts_with_p: false,
                    ..
                } => self.refuse("a named group `(?<name>...)` (RE2 writes `(?P<name>...)`)"),
                GroupKind::CaptureName { .. } | GroupKind::CaptureIndex(_) => Ok(()),
            },
            Ast::Assertion(assertion) => self.assertion(assertion),
            Ast::ClassUnicode(class) => self.unicode(class),
            Ast::ClassPerl(_) => {
                self.ascii = true;
                Ok(())
            }
            Ast::Literal(literal) => self.literal(&literal.kind),
            Ast::Repetition(repetition) => match &repetition.op.kind {
                RepetitionKind::Range(
                    RepetitionRange::Exactly(n)
                    | RepetitionRange::AtLeast(n)
                    | RepetitionRange::Bounded(_, n),
                ) if *n > RE2_MAX_REPEAT => self.refuse(format!(
                    "a repetition count above {RE2_MAX_REPEAT} (`{}`)",
                    self.pattern
                        .get(repetition.op.span.start.offset..repetition.op.span.end.offset)
                        .unwrap_or_default()
                )),
                _ => Ok(()),
            },
            Ast::Empty(_)
            | Ast::Dot(_)
            | Ast::ClassBracketed(_)
            | Ast::Alternation(_)
            | Ast::Concat(_) => Ok(()),
        }
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), Reading> {
        match item {
            ClassSetItem::Bracketed(_) => {
                self.refuse("a class inside a class (RE2 reads its `[` as a character)")
            }
            ClassSetItem::Unicode(class) => self.unicode(class),
            ClassSetItem::Perl(_) => {
                self.ascii = true;
                Ok(())
            }
            ClassSetItem::Literal(literal) => self.literal(&literal.kind),
            ClassSetItem::Range(range) => {
                self.literal(&range.start.kind)?;
                self.literal(&range.end.kind)
            }
            ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) | ClassSetItem::Union(_) => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(&mut self, _: &ClassSetBinaryOp) -> Result<(), Reading> {
        self.refuse("a class operation `&&`, `--` or `~~`")
    }
}

impl Walker<'_> {
    fn assertion(&mut self, assertion: &Assertion) -> Result<(), Reading> {
        match assertion.kind {
            AssertionKind::StartLine
            | AssertionKind::EndLine
            | AssertionKind::StartText
            | AssertionKind::EndText => Ok(()),
            AssertionKind::WordBoundary | AssertionKind::NotWordBoundary => {
                self.ascii = true;
                Ok(())
            }
            AssertionKind::WordBoundaryStart
            | AssertionKind::WordBoundaryEnd
            | AssertionKind::WordBoundaryStartHalf
            | AssertionKind::WordBoundaryEndHalf => self.refuse(
                "a word boundary `\\b{start}`, `\\b{end}`, `\\b{start-half}` or `\\b{end-half}`",
            ),
            AssertionKind::WordBoundaryStartAngle | AssertionKind::WordBoundaryEndAngle => {
                self.refuse("a word boundary `\\<` or `\\>`")
            }
        }
    }
}
