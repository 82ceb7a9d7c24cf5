package deploy

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// bootcFixtures are the status documents bootc's own tests parse (crates/lib/src/fixtures).
func bootcFixtures(t *testing.T) map[string][]byte {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(testutil.SharedDir(t), "reference", "bootc", "fixtures", "spec-*"))
	if len(paths) < 16 {
		t.Fatalf("found %d bootc fixtures, want 16", len(paths))
	}
	out := map[string][]byte{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = data
	}
	return out
}

// hostSchema is bootc's docs/src/host-v1.schema.json, with formats (date-time) asserted.
func hostSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(filepath.Join(testutil.SharedDir(t), "reference", "bootc", "host-v1.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func parseOrFatal(t testing.TB, data []byte) *Host {
	t.Helper()
	h, err := ParseHost(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	return h
}

// emit returns what one of h's writers prints.
func emit(t testing.TB, write func(io.Writer) error) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkEmitted validates the JSON form against the schema, and parses both forms back to h.
func checkEmitted(t *testing.T, sch *jsonschema.Schema, h *Host) {
	t.Helper()
	j := emit(t, h.WriteJSON)
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("not valid against host-v1.schema.json: %v\n%s", err, j)
	}
	for form, out := range map[string][]byte{"YAML": emit(t, h.WriteYAML), "JSON": j} {
		if back := parseOrFatal(t, out); !reflect.DeepEqual(back, h) {
			t.Errorf("%s round trip lost something:\n%s", form, out)
		}
	}
}

// generic is a YAML document as nested maps, with every scalar as its text (null as nil,
// a tagged scalar as "!tag text", a timestamp as an instant): the form in which a fixture
// and our output are compared.
func generic(n *yaml.Node) any {
	switch n.Kind {
	case yaml.DocumentNode:
		return generic(n.Content[0])
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i < len(n.Content); i += 2 {
			m[n.Content[i].Value] = generic(n.Content[i+1])
			if ts, err := time.Parse(time.RFC3339Nano, n.Content[i+1].Value); err == nil && n.Content[i].Value == "timestamp" {
				m["timestamp"] = ts.UTC().Format(time.RFC3339Nano) // an instant: see normalizeFixture
			}
		}
		return m
	case yaml.SequenceNode:
		var s []any
		for _, c := range n.Content {
			s = append(s, generic(c))
		}
		return s
	}
	if n.Tag == "!!null" && n.Style == 0 {
		return nil
	}
	if !strings.HasPrefix(n.Tag, "!!") {
		return n.Tag + " " + n.Value
	}
	return n.Value
}

func genericOf(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		t.Fatal(err)
	}
	return generic(&n).(map[string]any)
}

// normalizeFixture turns one of bootc's fixtures, which are hand-written inputs, into the
// document bootc itself would print after reading it. Each step is a rule of bootc's serde,
// not a shortcut of ours:
//
//  1. apiVersion v1alpha1 becomes v1: Host::new always prints API_VERSION.
//  2. status.isContainer is dropped: HostStatus no longer has it, and serde ignores unknown
//     fields (no deny_unknown_fields in spec.rs).
//  3. An absent field is printed with the value serde gave it: #[serde(default)] ones
//     (bootOrder, rollbackQueued, readOnly, softRebootCapable, downloadOnly, store) their
//     default, Option ones null; metadata stays as given.
//  4. A timestamp is compared as an instant: chrono prints 19:22:15.42Z as 19:22:15.420Z.
//
// Scalars are compared as text (generic), as serde reads them into typed fields: the
// fixtures' plain `version: 20231230.1` is a string to bootc, and printed '20231230.1'.
func normalizeFixture(doc map[string]any) map[string]any {
	if doc["apiVersion"] == APIVersionV1Alpha1 {
		doc["apiVersion"] = APIVersion
	}
	defaults := func(m any, kv ...any) {
		for i := 0; m != nil && i < len(kv); i += 2 {
			if _, ok := m.(map[string]any)[kv[i].(string)]; !ok {
				m.(map[string]any)[kv[i].(string)] = kv[i+1]
			}
		}
	}
	defaults(doc, "metadata", map[string]any{}, "spec", map[string]any{}, "status", map[string]any{})
	defaults(doc["spec"], "image", nil, "bootOrder", "default")
	st := doc["status"].(map[string]any)
	delete(st, "isContainer")
	defaults(st, "staged", nil, "booted", nil, "rollback", nil, "rollbackQueued", "false", "type", nil,
		"usrOverlay", nil, "readOnly", "false")
	entries, _ := st["otherDeployments"].([]any)
	for _, e := range append(entries, st["staged"], st["booted"], st["rollback"]) {
		defaults(e, "image", nil, "cachedUpdate", nil, "softRebootCapable", "false", "downloadOnly", "false",
			"store", nil, "ostree", nil, "composefs", nil)
		if e != nil {
			for _, img := range []any{e.(map[string]any)["image"], e.(map[string]any)["cachedUpdate"]} {
				defaults(img, "version", nil, "timestamp", nil)
			}
			defaults(e.(map[string]any)["composefs"], "bootDigest", nil)
		}
	}
	return doc
}

// TestStatusBootcFixtures: every fixture is read, printed and read back without loss, the
// print is the fixture itself (up to normalizeFixture), and it is valid against the schema.
func TestStatusBootcFixtures(t *testing.T) {
	sch := hostSchema(t)
	for name, data := range bootcFixtures(t) {
		t.Run(name, func(t *testing.T) {
			h := parseOrFatal(t, data)
			checkEmitted(t, sch, h)
			want, got := normalizeFixture(genericOf(t, data)), genericOf(t, emit(t, h.WriteYAML))
			if !reflect.DeepEqual(got, want) {
				w, _ := json.MarshalIndent(want, "", " ")
				g, _ := json.MarshalIndent(got, "", " ")
				t.Errorf("printed document differs from the fixture\nwant %s\ngot  %s", w, g)
			}
		})
	}
}

// TestStatusRealisticExample prints the bootc status document of bootc-behaviour.md §2 (a
// staged update, a rollback, a cached update, ostree backend) byte for byte.
func TestStatusRealisticExample(t *testing.T) {
	notes, err := os.ReadFile(filepath.Join(testutil.SharedDir(t), "reference", "bootc-behaviour.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(notes), "Realistic example")
	_, after, _ = strings.Cut(after, "```yaml\n")
	doc, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatal("no realistic example in bootc-behaviour.md")
	}
	h := parseOrFatal(t, []byte(doc))
	if got := string(emit(t, h.WriteYAML)); got != doc {
		t.Errorf("YAML differs from bootc's\nwant:\n%s\ngot:\n%s", doc, got)
	}
	checkEmitted(t, hostSchema(t), h)
}

func ptr[T any](v T) *T { return &v }

const (
	testVerity    = "5b9c1b4b3c8b0b4f1a3e0f6d2c7a9e8d1b2c3d4e5f60718293a4b5c6d7e8f901"
	testBoot      = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	testDigestOld = "sha256:736b359467c9437c1ac915acaae952aad854e07eb4a16a94999a48af08c83c34"
	testDigestNew = "sha256:16dc2b6256b4ff0d2ec18d2dbfb06d117904010c8cf9732cdb022818cf7a7566"
)

// composefsEntry is a deployment as ociboot records it: an image, a composefs EROFS whose
// verity is a sha256, a BLS entry; no ostree, no store.
func composefsEntry(digest, version string, ts time.Time) *BootEntry {
	ref := ImageReference{Image: "registry.example/os:stable", Transport: "registry",
		Signature: &ImageSignature{Kind: SignatureContainerPolicy}}
	return &BootEntry{
		Image: &ImageStatus{Image: ref, Version: ptr(version), Timestamp: ptr(ts), ImageDigest: digest,
			Architecture: "amd64"},
		Composefs: &BootEntryComposefs{Verity: testVerity, BootType: BootTypeBLS,
			Bootloader: BootloaderSystemd, BootDigest: ptr(testBoot)},
	}
}

// composefsHost is a host booted from registry.example/os:stable with version "1".
func composefsHost() *Host {
	h := NewHost()
	h.Status.Booted = composefsEntry(testDigestOld, "1", time.Date(2026, 8, 13, 4, 9, 51, 0, time.UTC))
	h.Spec.Image = &h.Status.Booted.Image.Image
	h.Status.Type = ptr(HostTypeBootcHost)
	return h
}

// fullHost sets every field of the schema at least once.
func fullHost() *Host {
	h := composefsHost()
	h.Metadata.Annotations = map[string]string{"b": "2", "a": "x: y", "true": "", "<&>": "\u2028\x01\"\\"}
	h.Metadata.Labels, h.Metadata.Namespace = map[string]string{}, ptr("ns")
	h.Spec.BootOrder = BootOrderRollback
	staged := composefsEntry(testDigestNew, "2", time.Date(2026, 8, 20, 4, 11, 2, 420_000_000, time.UTC))
	staged.SoftRebootCapable, staged.DownloadOnly = true, true
	staged.Image.Image.Signature = &ImageSignature{Kind: SignatureOstreeRemote, OstreeRemote: "fedora"}
	staged.Composefs.BootType, staged.Composefs.Bootloader, staged.Composefs.BootDigest = BootTypeUKI, BootloaderGrubCC, nil
	staged.Composefs.MissingVerityAllowed = true
	h.Status.Staged = staged
	h.Status.Booted.CachedUpdate = staged.Image
	rollback := composefsEntry(testDigestNew, "0.9", time.Date(2026, 8, 1, 0, 0, 0, 1, time.UTC))
	rollback.Image.Image.Signature, rollback.Image.Version = &ImageSignature{Kind: SignatureInsecure}, nil
	rollback.Composefs.Bootloader = BootloaderGrub
	h.Status.Rollback, h.Status.RollbackQueued = rollback, true
	h.Status.OtherDeployments = []BootEntry{{Incompatible: true, Pinned: true, Store: ptr(StoreOstreeContainer),
		Ostree:    &BootEntryOstree{Stateroot: "default", Checksum: strings.Repeat("ab", 32), DeploySerial: 7},
		Composefs: &BootEntryComposefs{Verity: testVerity, BootType: BootTypeBLS, Bootloader: BootloaderNone}}}
	h.Status.UsrOverlay = &FilesystemOverlay{AccessMode: OverlayReadOnly, Persistence: OverlayPersistent}
	h.Status.ReadOnly = true
	return h
}

func TestStatusConstructedHosts(t *testing.T) {
	sch := hostSchema(t)
	for name, h := range map[string]*Host{"empty": NewHost(), "composefs": composefsHost(), "full": fullHost()} {
		t.Run(name, func(t *testing.T) { checkEmitted(t, sch, h) })
	}
}

// TestStatusYAMLComposefs: a host as ociboot writes it, printed as serde_yaml 0.9 would
// print bootc's Host (field order of spec.rs; `version: '1'` quoted because it reads as a
// number; the timestamp plain because serde_yaml knows no timestamps; nulls printed).
func TestStatusYAMLComposefs(t *testing.T) {
	want := `apiVersion: org.containers.bootc/v1
kind: BootcHost
metadata:
  name: host
spec:
  image:
    image: registry.example/os:stable
    transport: registry
    signature: containerPolicy
  bootOrder: default
status:
  staged: null
  booted:
    image:
      image:
        image: registry.example/os:stable
        transport: registry
        signature: containerPolicy
      version: '1'
      timestamp: 2026-08-13T04:09:51Z
      imageDigest: ` + testDigestOld + `
      architecture: amd64
    cachedUpdate: null
    incompatible: false
    pinned: false
    softRebootCapable: false
    downloadOnly: false
    store: null
    ostree: null
    composefs:
      verity: ` + testVerity + `
      bootType: Bls
      bootloader: systemd
      bootDigest: ` + testBoot + `
      missingVerityAllowed: false
  rollback: null
  rollbackQueued: false
  type: bootcHost
  usrOverlay: null
  readOnly: false
`
	if got := string(emit(t, composefsHost().WriteYAML)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// libyaml does not indent a sequence under its key (as in spec-booted-pinned.yaml).
	h := composefsHost()
	h.Status.OtherDeployments = []BootEntry{*h.Status.Booted}
	seq := "\n  otherDeployments:\n  - image:\n      image:\n        image: registry.example/os:stable\n"
	if got := string(emit(t, h.WriteYAML)); !strings.Contains(got, seq+"        transport: registry\n") {
		t.Errorf("otherDeployments not printed as serde_yaml does:\n%s", got)
	}
}

// TestStatusJSONCanonical: RFC 8785 as bootc's canon_json writes it (sorted keys, no
// whitespace, no trailing newline, only '"', '\\' and controls escaped), and the
// ostreeRemote variant as serde_json's externally tagged object.
func TestStatusJSONCanonical(t *testing.T) {
	for _, c := range []struct {
		name string
		h    *Host
		want string
	}{
		{"empty", NewHost(), `{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","metadata":{"name":"host"},` +
			`"spec":{"bootOrder":"default","image":null},"status":{"booted":null,"readOnly":false,"rollback":null,` +
			`"rollbackQueued":false,"staged":null,"type":null,"usrOverlay":null}}`},
		{"metadata", &Host{APIVersion: APIVersion, Kind: HostKind, Metadata: ObjectMeta{
			Annotations: map[string]string{"b": "\u2028<&>é", "a": "\x01\t\"\\/", "\U0001F600": "", "\uFFFF": ""}},
			Spec: HostSpec{Image: &ImageReference{Image: "i", Transport: "oci",
				Signature: &ImageSignature{Kind: SignatureOstreeRemote, OstreeRemote: "r"}}}},
			`{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","metadata":{"annotations":{"a":"\u0001\t\"\\/",` +
				`"b":"` + "\u2028<&>é" + `","` + "\U0001F600" + `":"","` + "\uFFFF" + `":""}},"spec":{"bootOrder":"default",` +
				`"image":{"image":"i","signature":{"ostreeRemote":"r"},"transport":"oci"}},"status":{"booted":null,` +
				`"readOnly":false,"rollback":null,"rollbackQueued":false,"staged":null,"type":null,"usrOverlay":null}}`},
	} {
		if got := string(emit(t, c.h.WriteJSON)); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
	// Inside another document too (encoding/json would HTML-escape "<&>" and U+2028).
	want := string(emit(t, fullHost().WriteJSON))
	if m, err := json.Marshal(struct{ H *Host }{composefsHost()}); err != nil ||
		string(m) != `{"H":`+string(emit(t, composefsHost().WriteJSON))+`}` {
		t.Errorf("json.Marshal does not print bootc's form: %s %v", m, err)
	}
	var back Host
	if err := json.Unmarshal([]byte(want), &back); err != nil || !reflect.DeepEqual(&back, fullHost()) {
		t.Errorf("json.Unmarshal does not read bootc's form: %v", err)
	}
}

// TestParseHost: what bootc's serde accepts and refuses, and what ParseHost makes of it.
func TestParseHost(t *testing.T) {
	const head = "apiVersion: org.containers.bootc/v1\nkind: BootcHost\n"
	const entry = "\n    incompatible: false\n    pinned: false\n"
	for _, c := range []struct {
		name, doc string
		check     func(*Host) bool // nil: the document is refused
		err       string
	}{
		{"minimal document is all defaults", head, func(h *Host) bool {
			return reflect.DeepEqual(h, &Host{APIVersion: APIVersion, Kind: HostKind, Spec: HostSpec{BootOrder: BootOrderDefault}})
		}, ""},
		{"unknown fields are ignored", head + "future: 1\nstatus:\n  isContainer: false\n  booted:\n    x: {y: z}" + entry,
			func(h *Host) bool { return h.Status.Booted != nil }, ""},
		{"v1alpha1 is read as v1", strings.Replace(head, "v1", "v1alpha1", 1), func(h *Host) bool { return h.APIVersion == APIVersion }, ""},
		{"another apiVersion is refused", strings.Replace(head, "v1", "v2", 1), nil, "unsupported apiVersion"},
		{"another kind is refused", "apiVersion: org.containers.bootc/v1\nkind: Pod\n", nil, "kind"},
		{"apiVersion is required", "kind: BootcHost\n", nil, `document: missing field "apiVersion"`},
		{"pinned is required", head + "status:\n  booted:\n    incompatible: false\n", nil, `status.booted: missing field "pinned"`},
		{"a quoted bool is not a bool", head + "status:\n  booted:\n    incompatible: 'false'\n    pinned: false\n", nil, "not a bool"},
		{"bool words are YAML 1.2's", head + "status:\n  booted:\n    incompatible: False\n    pinned: TRUE\n", func(h *Host) bool { return h.Status.Booted.Pinned }, ""},
		{"yes is not a bool", head + "status:\n  booted:\n    incompatible: yes\n    pinned: no\n", nil, "not a bool"},
		{"unknown bootOrder", head + "spec:\n  bootOrder: sideways\n", nil, "spec.bootOrder"},
		{"bootType is capitalised", head + "status:\n  booted:" + entry + "    composefs: {verity: x, bootType: bls, bootloader: grub, missingVerityAllowed: false}\n", nil, "Bls or Uki"},
		{"spec null is not a spec", head + "spec:\n", nil, "spec: \"\" is not a map"},
		{"duplicate field", head + "kind: BootcHost\n", nil, "duplicate field"},
		{"two documents", head + "---\n" + head, nil, "more than one"},
		{"empty input", "", nil, "empty document"},
		{"plain number as string", head + "status:\n  booted:" + entry + "    image: {image: {image: i, transport: oci}, version: 1.0, imageDigest: d, architecture: a}\n",
			func(h *Host) bool { return *h.Status.Booted.Image.Version == "1.0" }, ""},
		{"quoted null is a string", head + "status:\n  booted:" + entry + "    image: {image: {image: i, transport: oci}, version: 'null', imageDigest: d, architecture: a}\n",
			func(h *Host) bool { return *h.Status.Booted.Image.Version == "null" }, ""},
		{"timestamp offset read in UTC", head + "status:\n  booted:" + entry + "    image: {image: {image: i, transport: oci}, timestamp: '2024-01-02T03:04:05.5+02:00', imageDigest: d, architecture: a}\n",
			func(h *Host) bool {
				return h.Status.Booted.Image.Timestamp.Equal(time.Date(2024, 1, 2, 1, 4, 5, 5e8, time.UTC)) && h.Status.Booted.Image.Timestamp.Location() == time.UTC
			}, ""},
		{"timestamp must be RFC 3339", head + "status:\n  booted:" + entry + "    image: {image: {image: i, transport: oci}, timestamp: yesterday, imageDigest: d, architecture: a}\n", nil, "RFC 3339"},
		{"deploySerial 010 is not octal", head + "status:\n  booted:" + entry + "    ostree: {stateroot: s, checksum: c, deploySerial: 010}\n", nil, "unsigned 32-bit"},
		{"deploySerial quoted", head + "status:\n  booted:" + entry + "    ostree: {stateroot: s, checksum: c, deploySerial: '1'}\n", nil, "unsigned 32-bit"},
		{"deploySerial too big", head + "status:\n  booted:" + entry + "    ostree: {stateroot: s, checksum: c, deploySerial: 4294967296}\n", nil, "unsigned 32-bit"},
		{"signature tag", head + "spec:\n  image: {image: i, transport: registry, signature: !ostreeRemote fedora}\n",
			func(h *Host) bool { return *h.Spec.Image.Signature == ImageSignature{SignatureOstreeRemote, "fedora"} }, ""},
		{"signature as a map", head + "spec:\n  image: {image: i, transport: registry, signature: {ostreeRemote: fedora}}\n",
			func(h *Host) bool { return *h.Spec.Image.Signature == ImageSignature{SignatureOstreeRemote, "fedora"} }, ""},
		{"signature JSON", `{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","spec":{"image":{"image":"i","transport":"registry","signature":{"ostreeRemote":"f\ud83d\ude00"}}}}`,
			func(h *Host) bool { return h.Spec.Image.Signature.OstreeRemote == "f\U0001F600" }, ""},
		{"signature null", head + "spec:\n  image: {image: i, transport: registry, signature: null}\n", func(h *Host) bool { return h.Spec.Image.Signature == nil }, ""},
		{"signature unknown", head + "spec:\n  image: {image: i, transport: registry, signature: gpg}\n", nil, "containerPolicy"},
		{"JSON string is not a bool", `{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","status":{"readOnly":"true"}}`, nil, "not a bool"},
		{"metadata maps", head + "metadata: {name: host, labels: null, annotations: {a: 1}}\n",
			func(h *Host) bool { return h.Metadata.Labels == nil && h.Metadata.Annotations["a"] == "1" }, ""},
		{"aliases", head + "status:\n  booted: &e" + entry + "  rollback: *e\n", func(h *Host) bool { return h.Status.Rollback != nil }, ""},
	} {
		h, err := ParseHost([]byte(c.doc))
		switch {
		case c.check == nil && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: got error %v, want one containing %q", c.name, err, c.err)
		case c.check != nil && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.check != nil && !c.check(h):
			t.Errorf("%s: read as %+v", c.name, h)
		}
	}
}

// TestSerdeQuotes: serde_yaml 0.9 quotes a string exactly when a plain scalar with its text
// would read back as something else (ser.rs serialize_str; de.rs visit_untagged_scalar).
func TestSerdeQuotes(t *testing.T) {
	for s, want := range map[string]bool{
		"": true, "~": true, "null": true, "NULL": true, "true": true, "False": true, "yes": false, "on": false,
		"1": true, "-1": true, "+1": true, "0": true, "007": true, "-012": true, "0x1F": true, "-0x1f": true,
		"0o17": true, "0b101": true, "0xZZ": false, "0X1F": false, "+0x1": true, "0x+1": false,
		"0x" + strings.Repeat("f", 32): true, "0x1" + strings.Repeat("0", 32): false,
		"1.5": true, "1e5": true, "1E-5": true, ".5": true, "5.": true, "20231230.1": true, "1.0.0": false,
		"42.20260820.0": false, "stream9.20240807.0": false, ".inf": true, "-.Inf": true, "+.INF": true,
		".nan": true, "+.nan": false, "inf": false, "NaN": false, "1_000": false, "0x1p3": false,
		"1e400": false, "1e-400": true, "nightly": false, "2023-09-30T19:22:16Z": false, "sha256:ab": false,
	} {
		if got := serdeQuotes(s); got != want {
			t.Errorf("serdeQuotes(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestStatusTimestamps: chrono's AutoSi in documents, bootc's format_timestamp (seconds,
// as its test_format_timestamp has it) in the human form.
func TestStatusTimestamps(t *testing.T) {
	for _, c := range []struct {
		ns         int
		doc, human string
	}{
		{0, "2024-06-15T10:30:45Z", "2024-06-15T10:30:45Z"},
		{420_000_000, "2024-06-15T10:30:45.420Z", "2024-06-15T10:30:45Z"},
		{123_456_000, "2024-06-15T10:30:45.123456Z", "2024-06-15T10:30:45Z"},
		{123_456_789, "2024-06-15T10:30:45.123456789Z", "2024-06-15T10:30:45Z"},
		{1, "2024-06-15T10:30:45.000000001Z", "2024-06-15T10:30:45Z"},
	} {
		ts := time.Date(2024, 6, 15, 12, 30, 45, c.ns, time.FixedZone("CEST", 2*3600))
		if got := formatTimestamp(ts); got != c.doc {
			t.Errorf("formatTimestamp(%v) = %s, want %s", ts, got, c.doc)
		}
		if got := humanTimestamp(&ts); got != c.human {
			t.Errorf("humanTimestamp(%v) = %s, want %s", ts, got, c.human)
		}
	}
}

func TestFilterToSlot(t *testing.T) {
	h := fullHost()
	booted := h.Status.Booted
	h.FilterToSlot(SlotBooted)
	if h.Status.Staged != nil || h.Status.Rollback != nil || h.Status.Booted != booted || len(h.Status.OtherDeployments) != 1 {
		t.Errorf("FilterToSlot(booted) left %+v", h.Status)
	}
}

// FuzzParseHost: whatever ParseHost accepts, both printed forms read back to the same Host,
// and printing is a fixed point.
func FuzzParseHost(f *testing.F) {
	f.Add([]byte("apiVersion: org.containers.bootc/v1\nkind: BootcHost\nmetadata: {annotations: {'a: b': \"\\t\"}}\n"))
	f.Add(emit(f, fullHost().WriteYAML))
	f.Add(emit(f, fullHost().WriteJSON))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHost(data)
		if err != nil {
			return
		}
		y := emit(t, h.WriteYAML)
		for form, out := range map[string][]byte{"YAML": y, "JSON": emit(t, h.WriteJSON)} {
			if back := parseOrFatal(t, out); !reflect.DeepEqual(back, h) {
				t.Fatalf("%s round trip lost something:\n%s", form, out)
			}
		}
		if again := emit(t, parseOrFatal(t, y).WriteYAML); !bytes.Equal(again, y) {
			t.Fatalf("printing is not a fixed point:\n%s\n%s", y, again)
		}
	})
}

// TestStatusHuman: the terminal form. The expected texts of bootc's fixtures are those of
// the tests in bootc's crates/lib/src/status.rs (test_human_readable_*, test_via_oci),
// dedented as indoc does; the others follow that file's code (human_render_slot and
// friends): rows right-aligned to the slot's prefix, "Rollback image" 16 wide, the ostree
// and composefs prefixes measured in bytes.
func TestStatusHuman(t *testing.T) {
	const (
		c9   = "quay.io/centos-bootc/centos-bootc:stream9"
		d38  = "sha256:47e5ed613a970b6574bfa954ab25bb6e85656552899aa518b5961d9645102b38"
		some = "quay.io/example/someimage:latest"
	)
	fixtures := bootcFixtures(t)
	fixture := func(name string) func() *Host { return func() *Host { return parseOrFatal(t, fixtures[name]) } }
	booted := "● Booted image: " + c9 + "\n        Digest: " + d38 + " (arm64)\n       Version: stream9.20240807.0\n"
	stagedBooted := "  Staged image: " + some + "\n        Digest: " + testDigestNew + " (arm64)\n" +
		"       Version: nightly (2023-10-14T19:22:15Z)\n\n● Booted image: " + some + "\n        Digest: " +
		testDigestOld + " (arm64)\n       Version: nightly (2023-09-30T19:22:16Z)\n"
	for _, c := range []struct {
		name    string
		host    func() *Host
		verbose bool
		want    string
	}{
		{"base spec", fixture("spec-staged-booted.yaml"), false, stagedBooted},
		{"rfe spec", fixture("spec-rfe-ostree-deployment.yaml"), false,
			"  Staged ostree\n         Commit: 1c24260fdd1be20f72a4a97a75c582834ee3431fbb0fa8e4f482bb219d633a45\n\n" +
				"● Booted ostree\n           Commit: f9fa3a553ceaaaf30cf85bfe7eed46a822f7b8fd7e14c1e3389cbc3f6d27f791\n"},
		{"staged spec", fixture("spec-ostree-to-bootc.yaml"), false,
			"  Staged image: " + c9 + "\n        Digest: " + d38 + " (s390x)\n       Version: stream9.20240807.0\n\n" +
				"● Booted ostree\n           Commit: f9fa3a553ceaaaf30cf85bfe7eed46a822f7b8fd7e14c1e3389cbc3f6d27f791\n"},
		{"booted spec", fixture("spec-only-booted.yaml"), false, booted},
		{"staged rollback spec", fixture("spec-staged-rollback.yaml"), false, "System is not deployed via bootc.\n"},
		{"via oci", fixture("spec-via-local-oci.yaml"), false, "● Booted image: oci:/var/mnt/osupdate\n        Digest: " + d38 +
			" (amd64)\n       Version: stream9.20240807.0\n"},
		{"booted pinned spec", fixture("spec-booted-pinned.yaml"), false, booted + "        Pinned: yes\n\n   Other image: " + c9 +
			"\n        Digest: sha256:47e5ed613a970b6574bfa954ab25bb6e85656552899aa518b5961d9645102b37 (arm64)\n" +
			"       Version: stream9.20240807.0\n        Pinned: yes\n"},
		{"booted usroverlay", fixture("spec-booted-usroverlay.yaml"), false, "● Booted image: " + some + "\n        Digest: " +
			testDigestOld + " (arm64)\n       Version: nightly (2023-09-30T19:22:16Z)\n  /usr overlay: transient, read/write\n"},
		{"booted with cached update", fixture("spec-booted-with-update.yaml"), false, "● Booted image: " + c9 + "\n        Digest: " + d38 +
			" (arm64)\n       Version: stream9.20240807.0 (2024-08-07T12:00:00Z)\n UpdateVersion: stream9.20240901.0 (2024-09-01T12:00:00Z)\n" +
			"  UpdateDigest: sha256:a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0\n"},
		{"cached update, same digest, hidden", fixture("spec-booted-update-same-digest.yaml"), false, booted},
		{"cached update without version", fixture("spec-booted-with-update-no-version.yaml"), false, booted +
			"        Update: Available\n  UpdateDigest: sha256:b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1\n"},
		{"staged download-only", fixture("spec-staged-download-only.yaml"), false, stagedBooted},
		{"verbose booted spec", fixture("spec-only-booted.yaml"), true, booted + "     StateRoot: default\n Deploy serial: 0\n" +
			"        Staged: no\n        Commit: 439f6bd2e2361bee292c1f31840d798c5ac5ba76483b8021dc9f7b0164ac0f48\n   Soft-reboot: no\n"},
		{"verbose staged download-only, booted unknown", func() *Host {
			h := fixture("spec-staged-download-only.yaml")()
			h.Status.Booted = nil
			h.Status.Booted = &BootEntry{}
			return h
		},
			true, "  Staged image: " + some + "\n        Digest: " + testDigestNew + " (arm64)\n       Version: nightly (2023-10-14T19:22:15Z)\n" +
				"     StateRoot: default\n Deploy serial: 0\n        Staged: yes\n        Commit: 3c6dad657109522e0b2e49bf44b5420f16f0b438b5b9357e5132211cfbad135d\n" +
				"     Signature: insecure\n   Soft-reboot: no\n Download-only: yes\n\nCurrent booted state is unknown\n"},
		{"rollback queued", func() *Host {
			h := fixture("spec-only-booted.yaml")()
			rb := *h.Status.Booted
			rb.Image = &ImageStatus{Image: rb.Image.Image, Version: ptr("stream9.20240801.0"), ImageDigest: testDigestOld, Architecture: "arm64"}
			h.Status.Rollback, h.Status.RollbackQueued, h.Spec.BootOrder = &rb, true, BootOrderRollback
			return h
		}, false, booted + "\n  Rollback image: " + c9 + "\n          Digest: " + testDigestOld + " (arm64)\n         Version: stream9.20240801.0\n"},
		{"ociboot composefs, verbose", func() *Host {
			h := composefsHost()
			h.Status.Staged = composefsEntry(testDigestNew, "2", time.Date(2026, 8, 20, 4, 11, 2, 7, time.UTC))
			h.Status.Staged.SoftRebootCapable, h.Status.Booted.Composefs.MissingVerityAllowed = true, true
			return h
		}, true, "  Staged image: registry.example/os:stable\n        Digest: " + testDigestNew + " (amd64)\n        Verity: " + testVerity +
			"\n       Version: 2 (2026-08-20T04:11:02Z)\n     Signature: container-policy\n   Soft-reboot: yes\n      FsVerity: Enforced\n" +
			" Download-only: no\n\n● Booted image: registry.example/os:stable\n        Digest: " + testDigestOld + " (amd64)\n        Verity: " +
			testVerity + "\n       Version: 1 (2026-08-13T04:09:51Z)\n     Signature: container-policy\n   Soft-reboot: no\n      FsVerity: Not Enforced\n"},
		{"composefs without image", func() *Host {
			h := composefsHost()
			h.Status.Booted.Image = nil
			return h
		}, false, "● Booted composefs\n              Commit: " + testVerity + "\n"},
		{"timestamp without version", func() *Host {
			h := composefsHost()
			h.Status.Booted.Image.Version = nil
			return h
		}, false, "● Booted image: registry.example/os:stable\n        Digest: " + testDigestOld + " (amd64)\n        Verity: " + testVerity +
			"\n     Timestamp: 2026-08-13T04:09:51Z\n"},
	} {
		var b bytes.Buffer
		if err := c.host().WriteHuman(&b, HumanOptions{Verbose: c.verbose}); err != nil {
			t.Fatal(err)
		}
		if got := b.String(); got != c.want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", c.name, got, c.want)
		}
	}
}
