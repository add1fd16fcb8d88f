//! Text primitives the verifiers share, and where they stand in for Python libraries IFEval calls
//! (google-research `instruction_following_eval/instructions_util.py`).
//!
//! Where results can differ from IFEval:
//! - **Sentences** ([`sentences`]): IFEval counts with NLTK's Punkt English model, whose learned
//!   abbreviation list and collocation statistics are not available here. We apply Punkt's
//!   decision rules with a fixed English abbreviation list: a `.`, `?` or `!` (with closing quotes or
//!   brackets) followed by whitespace ends a sentence, except after an abbreviation, a single-letter
//!   initial, an ellipsis or a number followed by a lowercase word. Counts can differ on rare
//!   abbreviations Punkt learned from its corpus and on its collocation exceptions.
//! - **Words for `capital_word_frequency`** ([`word_tokens`]): NLTK's `word_tokenize` is
//!   re-expressed by its effects on upper-case counts: punctuation `,;:@#$%&*?!()[]{}<>"` split
//!   words, contractions split (`DON'T` → `DO`, `N'T`; `CANNOT` → `CAN`, `NOT`), hyphens, dots
//!   and slashes do not.
//! - **Language** ([`detect_language`]): langdetect is replaced by `whatlang`'s trigram model
//!   (deterministic, unlike langdetect without a seed). Both return "no answer" on text without
//!   letters, which IFEval counts as followed. whatlang has no Swahili profile, so `sw` is never
//!   detected; the generator does not sample it.
//! - **Word characters** ([`count_words`]): Python's `\w` is letters, numbers and `_`, without
//!   combining marks; we use `[\p{L}\p{N}_]`, the same set, where Rust's `\w` would include marks.
//! - **JSON**: serde_json rejects Python's `NaN`/`Infinity` extensions and nests at most 128 deep.

use std::sync::LazyLock;

use regex::Regex;

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus the four information separators).
pub fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// Python's `str.isupper()`: some cased character, none lower-case.
pub fn py_isupper(s: &str) -> bool {
    s.chars().any(char::is_uppercase) && !s.chars().any(char::is_lowercase)
}

/// Python's `str.islower()`: some cased character, none upper-case.
pub fn py_islower(s: &str) -> bool {
    s.chars().any(char::is_lowercase) && !s.chars().any(char::is_uppercase)
}

static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[\p{L}\p{N}_]+").expect("static regex"));

/// IFEval's `count_words`: the number of `\w+` runs (Python's `\w`).
pub fn count_words(text: &str) -> usize {
    WORD.find_iter(text).count()
}

/// Characters that may close a sentence after its final punctuation (Punkt realigns them into the
/// sentence they close).
const CLOSERS: &[char] = &['"', '\'', ')', ']', '}', '»', '”', '’'];

/// Lower-cased English abbreviations after which a period does not end a sentence. A fixed list in
/// the spirit of Punkt's learned `abbrev_types` (titles, months, Latin, corporate, units).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "gen", "col", "lt", "capt", "sgt", "gov",
    "sen", "rep", "pres", "vs", "etc", "e.g", "i.e", "cf", "al", "approx", "dept", "inc", "ltd", "co", "corp", "no",
    "vol", "pp", "fig", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s",
    "u.k", "u.n", "a.m", "p.m", "ph.d", "b.c", "a.d", "est", "ave", "blvd", "rd",
];

/// The sentences of `text` (see the module docs for how they relate to NLTK Punkt), trimmed.
pub fn sentences(text: &str) -> Vec<&str> {
    // Whitespace-separated tokens with their byte offsets.
    let mut tokens: Vec<(usize, &str)> = Vec::new();
    let mut open = None;
    for (i, c) in text.char_indices() {
        if py_space(c) {
            if let Some(s) = open.take() {
                tokens.push((s, &text[s..i]));
            }
        } else if open.is_none() {
            open = Some(i);
        }
    }
    if let Some(s) = open {
        tokens.push((s, &text[s..]));
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &(at, tok)) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1).map(|&(_, t)| t);
        if next.is_none() {
            break;
        }
        if ends_sentence(tok, next) {
            let end = at + tok.len();
            let s = py_strip(&text[start..end]);
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let rest = py_strip(&text[start..]);
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// IFEval's `count_sentences`.
pub fn count_sentences(text: &str) -> usize {
    sentences(text).len()
}

/// Whether `tok` ends a sentence, given the token after it.
fn ends_sentence(tok: &str, next: Option<&str>) -> bool {
    let core = tok.trim_end_matches(CLOSERS);
    let Some(last) = core.chars().last() else { return false };
    if last == '?' || last == '!' {
        return true;
    }
    if last != '.' {
        return false;
    }
    let next_upper = next
        .and_then(|n| n.trim_start_matches(|c: char| !c.is_alphanumeric()).chars().next())
        .is_some_and(char::is_uppercase);
    if core.ends_with("..") {
        // An ellipsis ends a sentence only before a capitalised word.
        return next_upper;
    }
    let word = core
        .trim_end_matches('.')
        .trim_start_matches(|c: char| CLOSERS.contains(&c) || c == '(' || c == '[' || c == '"');
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return false;
    }
    let mut chars = word.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && c.is_alphabetic()
    {
        return false; // an initial
    }
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '.') {
        return next_upper; // "3. then" continues; "in 2019. The" ends
    }
    true
}

/// Tokens as NLTK's `word_tokenize` splits them, for counting upper-case words (module docs).
pub fn word_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(py_space).filter(|t| !t.is_empty()) {
        let mut cur = String::new();
        let chars: Vec<char> = raw.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let splits = match c {
                ',' | ':' => !chars.get(i + 1).is_some_and(char::is_ascii_digit),
                ';' | '@' | '#' | '$' | '%' | '&' | '*' | '?' | '!' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>'
                | '"' | '“' | '”' => true,
                _ => false,
            };
            if splits {
                push_word(&mut out, std::mem::take(&mut cur));
                out.push(c.to_string());
            } else {
                cur.push(c);
            }
        }
        push_word(&mut out, cur);
    }
    out
}

/// Pushes a word, splitting a sentence-final period and English contractions as NLTK does.
fn push_word(out: &mut Vec<String>, word: String) {
    if word.is_empty() {
        return;
    }
    let mut w = word.as_str();
    let mut tail = Vec::new();
    if w.len() > 1 && w.ends_with('.') && !w[..w.len() - 1].contains('.') {
        tail.push(".".to_string());
        w = &w[..w.len() - 1];
    }
    let lower = w.to_lowercase();
    for suffix in ["n't", "'ll", "'re", "'ve", "'s", "'m", "'d"] {
        if lower.ends_with(suffix) && lower.len() > suffix.len() {
            let cut = w.len() - suffix.len();
            out.push(w[..cut].to_string());
            out.push(w[cut..].to_string());
            out.extend(tail);
            return;
        }
    }
    if lower == "cannot" {
        out.push(w[..3].to_string());
        out.push(w[3..].to_string());
    } else {
        out.push(w.to_string());
    }
    out.extend(tail);
}

/// ISO 639-1 code of the language `text` is written in, or `None` when there is nothing to detect.
pub fn detect_language(text: &str) -> Option<&'static str> {
    use whatlang::Lang::*;
    let lang = whatlang::detect_lang(text)?;
    Some(match lang {
        Epo => "eo",
        Eng => "en",
        Rus => "ru",
        Cmn => "zh",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Ben => "bn",
        Fra => "fr",
        Deu => "de",
        Ukr => "uk",
        Kat => "ka",
        Ara => "ar",
        Hin => "hi",
        Jpn => "ja",
        Heb => "he",
        Yid => "yi",
        Pol => "pl",
        Amh => "am",
        Jav => "jv",
        Kor => "ko",
        Nob => "no",
        Dan => "da",
        Swe => "sv",
        Fin => "fi",
        Tur => "tr",
        Nld => "nl",
        Hun => "hu",
        Ces => "cs",
        Ell => "el",
        Bul => "bg",
        Bel => "be",
        Mar => "mr",
        Kan => "kn",
        Ron => "ro",
        Slv => "sl",
        Hrv => "hr",
        Srp => "sr",
        Mkd => "mk",
        Lit => "lt",
        Lav => "lv",
        Est => "et",
        Tam => "ta",
        Vie => "vi",
        Urd => "ur",
        Tha => "th",
        Guj => "gu",
        Uzb => "uz",
        Pan => "pa",
        Aze => "az",
        Ind => "id",
        Tel => "te",
        Pes => "fa",
        Mal => "ml",
        Ori => "or",
        Mya => "my",
        Nep => "ne",
        Sin => "si",
        Khm => "km",
        Tuk => "tk",
        Aka => "ak",
        Zul => "zu",
        Sna => "sn",
        Afr => "af",
        Lat => "la",
        Slk => "sk",
        Cat => "ca",
        Tgl => "tl",
        Hye => "hy",
    })
}

/// IFEval's `LANGUAGE_CODES`: the 30 response languages and their English names.
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "English"),
    ("es", "Spanish"),
    ("pt", "Portuguese"),
    ("ar", "Arabic"),
    ("hi", "Hindi"),
    ("fr", "French"),
    ("ru", "Russian"),
    ("de", "German"),
    ("ja", "Japanese"),
    ("it", "Italian"),
    ("bn", "Bengali"),
    ("uk", "Ukrainian"),
    ("th", "Thai"),
    ("ur", "Urdu"),
    ("ta", "Tamil"),
    ("te", "Telugu"),
    ("bg", "Bulgarian"),
    ("ko", "Korean"),
    ("pl", "Polish"),
    ("he", "Hebrew"),
    ("fa", "Persian"),
    ("vi", "Vietnamese"),
    ("ne", "Nepali"),
    ("sw", "Swahili"),
    ("kn", "Kannada"),
    ("mr", "Marathi"),
    ("gu", "Gujarati"),
    ("pa", "Punjabi"),
    ("ml", "Malayalam"),
    ("fi", "Finnish"),
];

/// The English name of an ISO 639-1 code IFEval knows.
pub fn language_name(code: &str) -> Option<&'static str> {
    LANGUAGES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_follow_punkt_rules() {
        assert_eq!(
            sentences("Hello world. How are you? Fine!"),
            ["Hello world.", "How are you?", "Fine!"]
        );
        assert_eq!(
            count_sentences("Dr. Smith met Mr. J. Jones at 5 p.m. yesterday. It rained."),
            2
        );
        assert_eq!(count_sentences("He said \"stop.\" Then he left."), 2);
        assert_eq!(count_sentences("Wait... what? No."), 2);
        assert_eq!(count_sentences("Wait... Then it went on."), 2);
        assert_eq!(count_sentences("Item 3. then continue. In 2019. The end."), 3);
        assert_eq!(count_sentences(""), 0);
        assert_eq!(count_sentences("no final punctuation"), 1);
    }

    #[test]
    fn word_tokens_split_like_nltk_for_case_counts() {
        assert_eq!(word_tokens("DON'T STOP, NOW!"), ["DO", "N'T", "STOP", ",", "NOW", "!"]);
        assert_eq!(
            word_tokens("WELL-KNOWN U.S. CANNOT"),
            ["WELL-KNOWN", "U.S.", "CAN", "NOT"]
        );
        assert_eq!(word_tokens("(A) 3,000 END."), ["(", "A", ")", "3,000", "END", "."]);
    }

    #[test]
    fn words_are_python_word_runs() {
        assert_eq!(count_words("Hello, world! It's 2024 & snake_case."), 6);
        assert_eq!(count_words("   "), 0);
    }

    #[test]
    fn python_case_predicates() {
        assert!(py_isupper("HELLO 123!") && !py_isupper("123") && !py_isupper("Hello"));
        assert!(py_islower("hello 123!") && !py_islower("123") && !py_islower("hEllo"));
        assert_eq!(py_strip("\u{1c} x \n"), "x");
    }

    #[test]
    fn language_detection_on_whole_sentences() {
        assert_eq!(
            detect_language("The quick brown fox jumps over the lazy dog."),
            Some("en")
        );
        assert_eq!(
            detect_language("Il fait très beau aujourd'hui et nous allons au marché."),
            Some("fr")
        );
        assert_eq!(detect_language("12345 !!! ..."), None);
        assert_eq!(language_name("kn"), Some("Kannada"));
    }
}
