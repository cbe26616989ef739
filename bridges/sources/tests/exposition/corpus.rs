//! The conformance corpus of the exposition parser: one small document per
//! rule, with the exact expected samples, errors and TYPE metadata, and what
//! the differential oracle (Python's `prometheus_client`) is expected to do.
//!
//! Who is right when the oracle differs is decided by the Prometheus Go
//! parser, `prometheus/common` `expfmt/text_parse.go`, and by the format's
//! own text ("leading and trailing whitespace is ignored"; "the last line
//! must end with a line feed").
#![allow(dead_code)]

/// One expected sample: labels as written (input order, empty values kept).
#[derive(Clone, Debug)]
pub struct Exp {
    pub name: &'static str,
    pub labels: Vec<(&'static str, &'static str)>,
    pub value: f64,
    /// `None`: no timestamp on the line (the default one applies).
    pub ts: Option<i64>,
}

/// What the oracle is expected to do with a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oracle {
    /// Agreement: when we report no error the oracle yields exactly our
    /// samples; when we report errors it rejects the document (it stops at
    /// its first bad line, so it cannot say more).
    Same,
    /// We accept everything, the oracle rejects the document. Why, and why
    /// we are right.
    PythonRejects(&'static str),
    /// We reject at least one line, the oracle accepts the document.
    PythonAccepts(&'static str),
    /// Both accept, the samples differ.
    PythonDiffers(&'static str),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub input: Vec<u8>,
    pub samples: Vec<Exp>,
    /// (line, `ErrorKind` variant name) in order.
    pub errors: Vec<(usize, &'static str)>,
    /// `# TYPE` metadata expected (family, type).
    pub types: Vec<(&'static str, &'static str)>,
    pub oracle: Oracle,
}

fn case(name: &'static str, input: &str) -> Case {
    Case {
        name,
        input: input.as_bytes().to_vec(),
        samples: Vec::new(),
        errors: Vec::new(),
        types: Vec::new(),
        oracle: Oracle::Same,
    }
}

impl Case {
    fn s(
        mut self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        value: f64,
        ts: Option<i64>,
    ) -> Self {
        self.samples.push(Exp {
            name,
            labels: labels.to_vec(),
            value,
            ts,
        });
        self
    }
    fn err(mut self, line: usize, kind: &'static str) -> Self {
        self.errors.push((line, kind));
        self
    }
    fn ty(mut self, family: &'static str, t: &'static str) -> Self {
        self.types.push((family, t));
        self
    }
    fn oracle(mut self, o: Oracle) -> Self {
        self.oracle = o;
        self
    }
}

pub fn cases() -> Vec<Case> {
    use Oracle::*;
    vec![
        // ---- names ----------------------------------------------------
        case(
            "colon_in_metric_name",
            "namespace_memory:kube_pod_container_resource_requests:sum{namespace=\"shop\"} 5.36870912e+08 1717171695000\n",
        )
        .s(
            "namespace_memory:kube_pod_container_resource_requests:sum",
            &[("namespace", "shop")],
            5.36870912e+08,
            Some(1717171695000),
        ),
        case("leading_colon_metric_name", ":m 1\n").s(":m", &[], 1.0, None),
        case("invalid_metric_name", "1m 1\n").err(1, "InvalidMetricName"),
        case("dash_in_metric_name", "m-x 1\n").err(1, "InvalidMetricName"),
        case("invalid_label_name", "m{1a=\"x\"} 1\n").err(1, "InvalidLabelName"),
        case("dash_in_label_name", "m{a-b=\"x\"} 1\n").err(1, "InvalidLabelName"),
        case("colon_in_label_name", "m{a:b=\"x\"} 1\n")
            .err(1, "InvalidLabelName")
            .oracle(PythonAccepts(
                "prometheus_client checks unquoted label names with the metric-name regex, which allows ':'; \
                 Go's isValidLabelNameContinuation does not, and neither does the data model",
            )),
        case("double_underscore_label_name", "m{__meta_x=\"y\"} 1\n")
            .s("m", &[("__meta_x", "y")], 1.0, None)
            .oracle(PythonRejects(
                "prometheus_client reserves every label name starting with __; Go's expfmt reserves only __name__",
            )),
        case("name_label_inside_braces", "m{__name__=\"m\"} 1\n").err(1, "ReservedLabelName"),
        case("name_only_inside_braces", "{__name__=\"m\"} 1\n")
            .err(1, "MissingMetricName")
            .oracle(PythonAccepts(
                "prometheus_client accepts a name given only as __name__ inside braces; Go's expfmt rejects \
                 __name__ as a label name (\"label name is reserved\")",
            )),
        case("quoted_label_name", "m{\"a.b\"=\"x\"} 1\n")
            .err(1, "QuotedName")
            .oracle(PythonAccepts(
                "quoted UTF-8 names belong to the newer escaping schemes, not to format 0.0.4; our pulls ask \
                 for 0.0.4, where names are escaped to [a-zA-Z0-9_:]",
            )),
        case("quoted_metric_name", "{\"my.metric\"} 1\n")
            .err(1, "MissingMetricName")
            .oracle(PythonAccepts(
                "quoted UTF-8 metric names belong to the newer escaping schemes, not to format 0.0.4",
            )),
        // ---- label values ---------------------------------------------
        case("escaped_backslash", "m{path=\"C:\\\\DIR\\\\x\"} 1\n").s(
            "m",
            &[("path", "C:\\DIR\\x")],
            1.0,
            None,
        ),
        case("escaped_quote", "m{msg=\"say \\\"hi\\\"\"} 1\n").s(
            "m",
            &[("msg", "say \"hi\"")],
            1.0,
            None,
        ),
        case("escaped_newline", "m{msg=\"a\\nb\"} 1\n").s("m", &[("msg", "a\nb")], 1.0, None),
        case("escaped_backslash_before_quote", "m{a=\"x\\\\\"} 1\n").s(
            "m",
            &[("a", "x\\")],
            1.0,
            None,
        ),
        case(
            "separators_inside_values",
            "kube_pod_labels{label_app=\"a,b=c\",x=\"}{\",y=\"} 1 # 2\"} 1\n",
        )
        .s(
            "kube_pod_labels",
            &[("label_app", "a,b=c"), ("x", "}{"), ("y", "} 1 # 2")],
            1.0,
            None,
        ),
        case("utf8_value", "m{a=\"héllo ✓ 日本\"} 1\n").s("m", &[("a", "héllo ✓ 日本")], 1.0, None),
        case("empty_label_value_kept_as_written", "m{a=\"\",b=\"x\"} 1\n").s(
            "m",
            &[("a", ""), ("b", "x")],
            1.0,
            None,
        ),
        case("unsorted_labels", "m{z=\"1\",a=\"2\"} 1\n").s(
            "m",
            &[("z", "1"), ("a", "2")],
            1.0,
            None,
        ),
        case("trailing_comma", "m{a=\"1\",} 1\n").s("m", &[("a", "1")], 1.0, None),
        case("empty_label_set", "m{} 1\n").s("m", &[], 1.0, None),
        case("unterminated_quote", "m{a=\"1} 1\n").err(1, "UnterminatedLabelValue"),
        case("unterminated_label_set", "m{a=\"1\"\n").err(1, "ExpectedCommaOrBrace"),
        case("bad_escape", "m{a=\"x\\ty\"} 1\n")
            .err(1, "InvalidEscape")
            .oracle(PythonAccepts(
                "prometheus_client keeps unknown escapes verbatim (so does the Prometheus server's promparse); \
                 expfmt's readTokenAsLabelValue rejects them (\"invalid escape sequence\")",
            )),
        case("duplicate_label_name", "m{a=\"1\",a=\"2\"} 1\n").err(1, "DuplicateLabelName"),
        case("missing_equals", "m{a \"x\"} 1\n").err(1, "ExpectedEquals"),
        case("unquoted_label_value", "m{a=x} 1\n").err(1, "ExpectedQuote"),
        case("missing_comma", "m{a=\"1\" b=\"2\"} 1\n").err(1, "ExpectedCommaOrBrace"),
        // ---- whitespace -----------------------------------------------
        case("blanks_around_tokens", "  m { a = \"1\" , b=\"2\" }   3   1000\n").s(
            "m",
            &[("a", "1"), ("b", "2")],
            3.0,
            Some(1000),
        ),
        // expfmt rejects a blank after the timestamp ("spurious string after
        // timestamp"); the format says trailing whitespace is ignored, and
        // prometheus_client agrees.
        case("trailing_whitespace", "m 1 1000 \t\nn 2\t\n").s("m", &[], 1.0, Some(1000)).s(
            "n",
            &[],
            2.0,
            None,
        ),
        case("tabs", "m\t1\t1000\n").s("m", &[], 1.0, Some(1000)),
        case("no_blank_after_brace", "m{a=\"1\"}2\n").s("m", &[("a", "1")], 2.0, None),
        case("blank_before_brace", "m {a=\"1\"} 2\n").s("m", &[("a", "1")], 2.0, None),
        case("blank_lines", "\n\n  \nm 1\n\t\n").s("m", &[], 1.0, None),
        case("crlf_line_end", "m 1\r\n")
            .err(1, "InvalidValue")
            .oracle(PythonAccepts(
                "prometheus_client strips every line; in Go's parser '\\r' is not whitespace, so \"1\\r\" is \
                 not a float",
            )),
        // ---- values ---------------------------------------------------
        case(
            "special_values",
            "a NaN\nb +Inf\nc -Inf\nd Inf\ne 1.87695104e+08\nf -0.5e-3\ng inf\nh nan\ni 1E3\nj .5\nk 5.\nl +5\nm 1e-400\nn 12345678901234567890\n",
        )
        .s("a", &[], f64::NAN, None)
        .s("b", &[], f64::INFINITY, None)
        .s("c", &[], f64::NEG_INFINITY, None)
        .s("d", &[], f64::INFINITY, None)
        .s("e", &[], 1.87695104e+08, None)
        .s("f", &[], -0.5e-3, None)
        .s("g", &[], f64::INFINITY, None)
        .s("h", &[], f64::NAN, None)
        .s("i", &[], 1000.0, None)
        .s("j", &[], 0.5, None)
        .s("k", &[], 5.0, None)
        .s("l", &[], 5.0, None)
        .s("m", &[], 0.0, None)
        .s("n", &[], 12345678901234567890.0, None),
        case("negative_zero", "m -0\n")
            .s("m", &[], -0.0, None)
            .oracle(PythonDiffers(
                "prometheus_client parses integer tokens with int(), so -0 becomes +0.0; Go's ParseFloat \
                 keeps -0.0",
            )),
        case("bad_value", "m abc\n").err(1, "InvalidValue"),
        case("hex_value", "m 0x1A\n").err(1, "InvalidValue"),
        case("hex_float_value", "m 0x1p3\n").err(1, "InvalidValue"),
        case("underscore_value", "m 1_000\n").err(1, "InvalidValue"),
        case("signed_nan", "m -NaN\n")
            .err(1, "InvalidValue")
            .oracle(PythonAccepts("Go's ParseFloat accepts no sign before NaN; Python's float() does")),
        case("value_out_of_range", "m 1e400\n")
            .err(1, "ValueOutOfRange")
            .oracle(PythonAccepts(
                "Go's ParseFloat reports overflow as a range error; Python's float() returns inf",
            )),
        case("missing_value", "m{a=\"1\"}\n").err(1, "MissingValue"),
        case("missing_value_bare_name", "m\n").err(1, "MissingValue"),
        // ---- timestamps -----------------------------------------------
        case("timestamp_negative", "m 1 -1000\n").s("m", &[], 1.0, Some(-1000)),
        case("timestamp_plus_sign", "m 1 +1000\n").s("m", &[], 1.0, Some(1000)),
        case("timestamp_missing", "m 1\n").s("m", &[], 1.0, None),
        case("bad_timestamp", "m 1 abc\n").err(1, "InvalidTimestamp"),
        case("float_timestamp", "m 1 1.5e3\n")
            .err(1, "InvalidTimestamp")
            .oracle(PythonAccepts(
                "prometheus_client takes any float as timestamp; Go wants an integer in ms (ParseInt)",
            )),
        case("timestamp_overflow", "m 1 99999999999999999999\n")
            .err(1, "InvalidTimestamp")
            .oracle(PythonAccepts(
                "Python integers are unbounded; Go's ParseInt(…, 64) reports a range error",
            )),
        case("spurious_after_timestamp", "m 1 2 3\n")
            .err(1, "TrailingGarbage")
            .oracle(PythonAccepts(
                "prometheus_client silently takes the last token as the timestamp; Go: \"spurious string \
                 after timestamp\"",
            )),
        // ---- comments and metadata --------------------------------------
        case(
            "help_and_type",
            "# HELP m Some \\\\ help\\nmore\n# TYPE m gauge\nm 1\n",
        )
        .s("m", &[], 1.0, None)
        .ty("m", "gauge"),
        case("counter_total", "# TYPE c_total counter\nc_total 5\n")
            .s("c_total", &[], 5.0, None)
            .ty("c_total", "counter"),
        case("counter_without_total", "# TYPE requests counter\nrequests 5\n")
            .s("requests", &[], 5.0, None)
            .ty("requests", "counter")
            .oracle(PythonDiffers(
                "prometheus_client renames the samples of a counter family to <name>_total (its OpenMetrics \
                 munging); Go and Prometheus keep `requests`",
            )),
        case(
            "histogram_family",
            "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
        )
        .s("h_bucket", &[("le", "0.5")], 1.0, None)
        .s("h_bucket", &[("le", "+Inf")], 2.0, None)
        .s("h_sum", &[], 3.0, None)
        .s("h_count", &[], 2.0, None)
        .ty("h", "histogram"),
        case(
            "summary_family",
            "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n",
        )
        .s("s", &[("quantile", "0.5")], 1.0, None)
        .s("s_sum", &[], 2.0, None)
        .s("s_count", &[], 3.0, None)
        .ty("s", "summary"),
        case("type_case_insensitive", "# TYPE m GAUGE\nm 1\n")
            .s("m", &[], 1.0, None)
            .ty("m", "gauge")
            .oracle(PythonRejects(
                "prometheus_client accepts only lower-case types; Go's expfmt upper-cases the token first",
            )),
        case("other_comments_ignored", "# just a comment\n#\n# HELP\n#TYPEx y\n# HELP m\nm 1\n")
            .s("m", &[], 1.0, None),
        case("type_without_type", "# TYPE m\nm 1\n")
            .s("m", &[], 1.0, None)
            .oracle(PythonRejects(
                "prometheus_client raises on a TYPE line without a type; Go ignores it (\"not considered a \
                 syntax error\")",
            )),
        case("unknown_type", "# TYPE m foo\nm 1\n")
            .s("m", &[], 1.0, None)
            .err(1, "UnknownType"),
        case("duplicate_type", "# TYPE m gauge\n# TYPE m counter\nm 1\n")
            .s("m", &[], 1.0, None)
            .err(2, "DuplicateType")
            .ty("m", "gauge")
            .oracle(PythonAccepts(
                "prometheus_client lets a second TYPE line win; Go: \"second TYPE line for metric name\"",
            )),
        case("duplicate_help", "# HELP m one\n# HELP m two\nm 1\n")
            .s("m", &[], 1.0, None)
            .err(2, "DuplicateHelp")
            .oracle(PythonAccepts(
                "prometheus_client lets a second HELP line win; Go: \"second HELP line for metric name\"",
            )),
        case("bad_help_escape", "# HELP m a \\t b\nm 1\n")
            .s("m", &[], 1.0, None)
            .err(1, "InvalidHelpEscape")
            .oracle(PythonAccepts(
                "prometheus_client keeps unknown HELP escapes verbatim; Go's readTokenUntilNewline rejects them",
            )),
        case("invalid_metric_name_in_type", "# TYPE 1m gauge\nm 1\n")
            .s("m", &[], 1.0, None)
            .err(1, "InvalidCommentMetricName"),
        // ---- robustness -------------------------------------------------
        case("bad_line_among_good", "a 1\nb{ 2\nc 3\n")
            .s("a", &[], 1.0, None)
            .s("c", &[], 3.0, None)
            .err(2, "InvalidLabelName"),
        case("repeated_series", "m{a=\"1\"} 1 1000\nm{a=\"1\"} 2 2000\n")
            .s("m", &[("a", "1")], 1.0, Some(1000))
            .s("m", &[("a", "1")], 2.0, Some(2000)),
        case("truncated_last_line", "m 1 1000\nm{a=\"x\"} 12")
            .s("m", &[], 1.0, Some(1000))
            .err(2, "Truncated")
            .oracle(PythonAccepts(
                "the format requires a final line feed and a body cut mid-line can look complete \
                 (`x 1234.5` cut to `x 12`); Go rejects it too (\"unexpected end of input stream\")",
            )),
        case("truncated_mid_labels", "m 1\nm{a=\"x").s("m", &[], 1.0, None).err(2, "Truncated"),
        case("unterminated_blank_tail", "m 1\n  ").s("m", &[], 1.0, None),
    ]
}
