package deploy

// The host status document: bootc's org.containers.bootc/v1 BootcHost (crates/lib/src/spec.rs
// and k8sapitypes.rs in bootc-dev/bootc), which `ociboot status` prints so that tools made for
// `bootc status` read ociboot unchanged. The json tags give the wire names in serde's field
// order, omitempty marks skip_serializing_if and bootc:"default" #[serde(default)]; one
// reflective codec reads them both ways, so YAML and JSON cannot drift apart.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"go.yaml.in/yaml/v3"
)

// The identity of the document. bootc has emitted v1 since 1.0 and still reads the older
// v1alpha1 documents (its fixtures are v1alpha1); ParseHost accepts both and yields v1.
const (
	APIVersion         = "org.containers.bootc/v1"
	APIVersionV1Alpha1 = "org.containers.bootc/v1alpha1"
	HostKind           = "BootcHost"
	HostObjectName     = "host"
)

// Host is the whole status document: what the host should run (Spec) and what it has
// (Status). Status.Booted == nil means the system is not managed by ociboot (or bootc).
type Host struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata" bootc:"default"`
	Spec       HostSpec   `json:"spec" bootc:"default"`
	Status     HostStatus `json:"status" bootc:"default"`
}

// ObjectMeta is the Kubernetes-style metadata; bootc only ever sets Name ("host"). A nil
// map is an absent one; an empty non-nil map is printed as {}.
type ObjectMeta struct {
	Annotations map[string]string `json:"annotations,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Name        *string           `json:"name,omitempty"`
	Namespace   *string           `json:"namespace,omitempty"`
}

// HostSpec is the desired state, the part `edit` may change: the image to follow, or the
// boot order (a rollback), never both at once. A zero BootOrder is printed as "default".
type HostSpec struct {
	Image     *ImageReference `json:"image"`
	BootOrder BootOrder       `json:"bootOrder" bootc:"default" enum:"default,rollback"`
}

// ImageReference names an image: Image within Transport ("registry", "oci", "oci-archive",
// "containers-storage"...). A nil Signature (containers-policy.json decides) is not printed.
type ImageReference struct {
	Image     string          `json:"image"`
	Transport string          `json:"transport"`
	Signature *ImageSignature `json:"signature,omitempty"`
}

// ImageSignature is how fetches are verified: SignatureOstreeRemote names a remote (JSON
// {"ostreeRemote": name}, YAML `!ostreeRemote name`); the other kinds are bare strings.
type ImageSignature struct {
	Kind         SignatureKind
	OstreeRemote string
}

// HostStatus is what the host has: the deployment staged for the next boot, the booted one,
// the one a rollback would boot, the rest (pinned). RollbackQueued: rollback sorts first;
// Type: the booted one came from an image; ReadOnly: the physical root is (a live ISO).
type HostStatus struct {
	Staged           *BootEntry         `json:"staged"`
	Booted           *BootEntry         `json:"booted"`
	Rollback         *BootEntry         `json:"rollback"`
	OtherDeployments []BootEntry        `json:"otherDeployments,omitempty" bootc:"default"`
	RollbackQueued   bool               `json:"rollbackQueued" bootc:"default"`
	Type             *string            `json:"type" enum:"bootcHost"`
	UsrOverlay       *FilesystemOverlay `json:"usrOverlay"`
	ReadOnly         bool               `json:"readOnly" bootc:"default"`
}

// FilesystemOverlay describes the transient or persistent overlay on /usr, if any.
type FilesystemOverlay struct {
	AccessMode  OverlayAccessMode  `json:"accessMode" enum:"readOnly,readWrite"`
	Persistence OverlayPersistence `json:"persistence" enum:"transient,persistent"`
}

// BootEntry is one deployment. ociboot fills Composefs and leaves Store and Ostree nil, as
// bootc's composefs backend does; the ostree fields exist so bootc's documents round-trip.
type BootEntry struct {
	Image             *ImageStatus        `json:"image"`
	CachedUpdate      *ImageStatus        `json:"cachedUpdate"`
	Incompatible      bool                `json:"incompatible"`
	Pinned            bool                `json:"pinned"`
	SoftRebootCapable bool                `json:"softRebootCapable" bootc:"default"`
	DownloadOnly      bool                `json:"downloadOnly" bootc:"default"`
	Store             *string             `json:"store" enum:"ostreeContainer"`
	Ostree            *BootEntryOstree    `json:"ostree"`
	Composefs         *BootEntryComposefs `json:"composefs"`
}

// ImageStatus describes a fetched image: its manifest digest, version label and creation
// time (printed in UTC with 0, 3, 6 or 9 fractional digits, as chrono does).
type ImageStatus struct {
	Image        ImageReference `json:"image"`
	Version      *string        `json:"version"`
	Timestamp    *time.Time     `json:"timestamp"`
	ImageDigest  string         `json:"imageDigest"`
	Architecture string         `json:"architecture"`
}

// BootEntryOstree locates an ostree deployment.
type BootEntryOstree struct {
	Stateroot    string `json:"stateroot"`
	Checksum     string `json:"checksum"`
	DeploySerial uint32 `json:"deploySerial"`
}

// BootEntryComposefs locates a composefs deployment: Verity is its EROFS image's fs-verity
// digest (64 hex for ociboot's sha256, 128 for bootc's sha512); BootDigest (BLS only) the
// sha256 of its kernel and initramfs.
type BootEntryComposefs struct {
	Verity               string     `json:"verity"`
	BootType             BootType   `json:"bootType" enum:"Bls,Uki"`
	Bootloader           Bootloader `json:"bootloader" enum:"grub,grub-cc,systemd,none"`
	BootDigest           *string    `json:"bootDigest"`
	MissingVerityAllowed bool       `json:"missingVerityAllowed"`
}

// The enumerated strings of the document, each a serde enum in bootc.
type (
	BootOrder          string // which deployment boots next
	SignatureKind      string // the variant of an ImageSignature
	OverlayAccessMode  string // whether the /usr overlay is writable
	OverlayPersistence string // whether the /usr overlay survives a reboot
	BootType           string // how a composefs deployment boots
	Bootloader         string // the boot loader that reads the entries
)

// Their values as on the wire ("Bls", "Uki" as the schema has them); enum tags list them.
const (
	BootOrderDefault         BootOrder          = "default"  // the staged, else the booted deployment
	BootOrderRollback        BootOrder          = "rollback" // the rollback deployment
	SignatureOstreeRemote    SignatureKind      = "ostreeRemote"
	SignatureContainerPolicy SignatureKind      = "containerPolicy"
	SignatureInsecure        SignatureKind      = "insecure"
	OverlayReadOnly          OverlayAccessMode  = "readOnly"
	OverlayReadWrite         OverlayAccessMode  = "readWrite"
	OverlayTransient         OverlayPersistence = "transient"
	OverlayPersistent        OverlayPersistence = "persistent"
	BootTypeBLS              BootType           = "Bls" // a BLS type 1 entry: kernel + initramfs
	BootTypeUKI              BootType           = "Uki" // a unified kernel image
	BootloaderGrub           Bootloader         = "grub"
	BootloaderGrubCC         Bootloader         = "grub-cc"
	BootloaderSystemd        Bootloader         = "systemd"
	BootloaderNone           Bootloader         = "none"
	HostTypeBootcHost                           = "bootcHost"       // HostStatus.Type: from an image
	StoreOstreeContainer                        = "ostreeContainer" // BootEntry.Store of ostree
)

// NewHost returns the document of a host with nothing deployed, as bootc's Host::new:
// v1, named "host", spec.image null, bootOrder default, every slot null.
func NewHost() *Host {
	name := HostObjectName
	return &Host{APIVersion: APIVersion, Kind: HostKind, Metadata: ObjectMeta{Name: &name},
		Spec: HostSpec{BootOrder: BootOrderDefault}}
}

// WriteYAML writes the document as `bootc status` does when stdout is not a terminal
// (serde_yaml 0.9): keys in field order, two-space indentation, sequences not indented
// under their key, strings that would read back as null, a bool or a number single-quoted.
func (h *Host) WriteYAML(w io.Writer) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	enc.CompactSeqIndent()
	if err := enc.Encode(encodeValue(reflect.ValueOf(h).Elem())); err != nil {
		return fmt.Errorf("writing host status as YAML: %w", err)
	}
	return enc.Close()
}

// WriteJSON writes the document as `bootc status --format json` does: RFC 8785 canonical
// JSON (bootc's canon_json), i.e. no whitespace, keys sorted by UTF-16 code units, and no
// trailing newline.
func (h *Host) WriteJSON(w io.Writer) error {
	b, _ := h.MarshalJSON()
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing host status as JSON: %w", err)
	}
	return nil
}

// MarshalJSON is WriteJSON's document: encoding/json would print a Host's fields from
// their tags but not as bootc does (the signature union, chrono's timestamps, the order).
func (h *Host) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	writeCanonicalJSON(&b, encodeValue(reflect.ValueOf(h).Elem()))
	return b.Bytes(), nil
}

// UnmarshalJSON is ParseHost, for the same reason.
func (h *Host) UnmarshalJSON(data []byte) error {
	p, err := ParseHost(data)
	if err == nil {
		*h = *p
	}
	return err
}

// ParseHost reads a status document in YAML or JSON as bootc's serde does: unknown fields
// are ignored, absent defaulted ones defaulted, absent required ones (incompatible,
// pinned, imageDigest...) an error. apiVersion v1alpha1 is read as v1; another apiVersion
// or kind is refused (bootc does not check them, but such a document is not one to act on).
func ParseHost(data []byte) (*Host, error) {
	var h Host
	root, err := parseStatusTree(data)
	if err == nil {
		err = decodeValue(root, reflect.ValueOf(&h).Elem(), "")
	}
	switch {
	case err != nil:
	case h.APIVersion != APIVersion && h.APIVersion != APIVersionV1Alpha1:
		err = fmt.Errorf("unsupported apiVersion %q (want %s)", h.APIVersion, APIVersion)
	case h.Kind != HostKind:
		err = fmt.Errorf("kind is %q, not %s", h.Kind, HostKind)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing host status: %w", err)
	}
	h.APIVersion, h.Spec.BootOrder = APIVersion, cmp.Or(h.Spec.BootOrder, BootOrderDefault)
	return &h, nil
}

// parseStatusTree reads JSON (not as YAML, which refuses surrogate pairs and long keys; its
// strings become quoted scalars, so only plain scalars are null, bools or numbers) or YAML.
func parseStatusTree(data []byte) (*yaml.Node, error) {
	if json.Valid(data) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		return jsonToNode(dec), nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, errors.New("empty document")
	} else if err != nil {
		return nil, err
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	return doc.Content[0], nil
}

// jsonToNode converts the next value of JSON already found valid, so Token cannot fail.
func jsonToNode(dec *json.Decoder) *yaml.Node {
	tok, _ := dec.Token()
	switch t := tok.(type) {
	case json.Delim:
		n := &yaml.Node{Kind: map[json.Delim]yaml.Kind{'{': yaml.MappingNode, '[': yaml.SequenceNode}[t]}
		for dec.More() {
			if n.Kind == yaml.MappingNode {
				k, _ := dec.Token()
				n.Content = append(n.Content, yamlScalar("!!str", k.(string)))
			}
			n.Content = append(n.Content, jsonToNode(dec))
		}
		dec.Token()
		return n
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t, Style: yaml.DoubleQuotedStyle}
	case json.Number:
		return yamlScalar("!!float", t.String())
	case bool:
		return yamlScalar("!!bool", strconv.FormatBool(t))
	}
	return yamlScalar("!!null", "null")
}

// wireField is a struct field as its tags describe it: its name, whether serde skips it
// empty, whether it may be absent on input (an Option, or bootc:"default"), its variants.
type wireField struct {
	index               int
	name                string
	omitEmpty, optional bool
	enum                []string
}

func wireFields(t reflect.Type) []wireField {
	var fs []wireField
	for i := range t.NumField() {
		sf := t.Field(i)
		name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
		k := sf.Type.Kind()
		fs = append(fs, wireField{i, name, opts == "omitempty",
			k == reflect.Pointer || k == reflect.Map || sf.Tag.Get("bootc") == "default",
			strings.FieldsFunc(sf.Tag.Get("enum"), func(r rune) bool { return r == ',' })})
	}
	return fs
}

func yamlScalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}

// yamlString is a string scalar styled as serde_yaml styles it. Its tag stays empty: with
// "!!str" the encoder would double-quote anything that resolves otherwise (a timestamp).
func yamlString(s string) *yaml.Node {
	n := yamlScalar("", strings.ToValidUTF8(s, "\uFFFD"))
	if serdeQuotes(n.Value) {
		n.Style = yaml.SingleQuotedStyle
	}
	return n
}

// encodeValue turns a value into the tree both writers print. A scalar's tag tells its type
// to writeCanonicalJSON; "!ostreeRemote", the newtype variant, YAML prints as serde_yaml.
func encodeValue(v reflect.Value) *yaml.Node {
	switch t := v.Type(); {
	case t == reflect.TypeFor[time.Time]():
		return yamlString(formatTimestamp(v.Interface().(time.Time)))
	case t == reflect.TypeFor[ImageSignature]():
		sig := v.Interface().(ImageSignature)
		if sig.Kind != SignatureOstreeRemote {
			return yamlString(string(sig.Kind))
		}
		n := yamlString(sig.OstreeRemote)
		n.Tag = "!" + string(SignatureOstreeRemote)
		return n
	case t == reflect.TypeFor[BootOrder]():
		return yamlString(cmp.Or(v.String(), string(BootOrderDefault)))
	}
	n := &yaml.Node{Kind: yaml.MappingNode}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return yamlScalar("!!null", "null")
		}
		return encodeValue(v.Elem())
	case reflect.Struct:
		for _, f := range wireFields(v.Type()) {
			if fv := v.Field(f.index); !f.omitEmpty || !fv.IsZero() && (fv.Kind() != reflect.Slice || fv.Len() > 0) {
				n.Content = append(n.Content, yamlString(f.name), encodeValue(fv))
			}
		}
	case reflect.Map: // a BTreeMap in bootc: keys in byte order
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			n.Content = append(n.Content, yamlString(k.String()), yamlString(v.MapIndex(k).String()))
		}
	case reflect.Slice:
		n.Kind = yaml.SequenceNode
		for i := range v.Len() {
			n.Content = append(n.Content, encodeValue(v.Index(i)))
		}
	case reflect.Bool:
		return yamlScalar("!!bool", strconv.FormatBool(v.Bool()))
	case reflect.Uint32:
		return yamlScalar("!!int", strconv.FormatUint(v.Uint(), 10))
	default:
		return yamlString(v.String())
	}
	return n
}

// formatTimestamp is chrono's serialization of a DateTime<Utc>: RFC 3339 in UTC with
// SecondsFormat::AutoSi (no fraction, or 3, 6 or 9 digits) and a "Z".
func formatTimestamp(t time.Time) string {
	frac := "." + strconv.Itoa(1e9 + t.Nanosecond())[1:]
	for strings.HasSuffix(frac, "000") {
		frac = frac[:len(frac)-3]
	}
	return t.UTC().Format("2006-01-02T15:04:05") + strings.TrimSuffix(frac, ".") + "Z"
}

// parseTimestamp reads RFC 3339 with any offset, as chrono does, into UTC.
func parseTimestamp(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t.UTC(), err
}

var (
	yamlNumber   = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|[0-9]*\.[0-9]+)([eE][+-]?[0-9]+)?$`)
	yamlRadixInt = regexp.MustCompile(`^([+-]?)0(x[0-9a-fA-F]+|o[0-7]+|b[01]+)$`)
	int128Limit  = new(big.Int).Lsh(big.NewInt(1), 128)
)

// serdeQuotes reports whether serde_yaml 0.9 single-quotes a string (ser.rs
// InferScalarStyle, de.rs visit_untagged_scalar): when as a plain scalar it would read as
// null, a bool, an integer (also 0x, 0o, 0b; within 128 bits), a finite float in Rust's
// grammar, .inf or .nan, or digits with a leading zero. libyaml styles the rest.
func serdeQuotes(s string) bool {
	switch s {
	case "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE",
		".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
		".nan", ".NaN", ".NAN":
		return true
	}
	if m := yamlRadixInt.FindStringSubmatch(s); m != nil {
		n, _ := new(big.Int).SetString(m[2][1:], map[byte]int{'x': 16, 'o': 8, 'b': 2}[m[2][0]])
		if m[1] == "-" { // i128 reaches down to -2^127
			return new(big.Int).Lsh(n, 1).Cmp(int128Limit) <= 0
		}
		return n.Cmp(int128Limit) < 0
	}
	if yamlNumber.MatchString(s) { // decimal integers too: every one that fits an f64 is quoted
		f, _ := strconv.ParseFloat(s, 64)
		return !math.IsInf(f, 0)
	}
	return false
}

// digitsButNotNumber is serde_yaml's name for "007" or "-012": a string by YAML 1.2, which
// serde_yaml quotes on output and refuses as an integer on input.
func digitsButNotNumber(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	return len(s) > 1 && s[0] == '0' && strings.Trim(s, "0123456789") == ""
}

// writeCanonicalJSON prints a document tree as RFC 8785 JSON.
func writeCanonicalJSON(b *bytes.Buffer, n *yaml.Node) {
	switch {
	case n.Kind == yaml.MappingNode:
		keys := make([]int, 0, len(n.Content)/2) // the index of each key in n.Content
		for i := 0; i < len(n.Content); i += 2 {
			keys = append(keys, i)
		}
		slices.SortFunc(keys, func(x, y int) int {
			return slices.Compare(utf16.Encode([]rune(n.Content[x].Value)), utf16.Encode([]rune(n.Content[y].Value)))
		})
		b.WriteByte('{')
		for j, i := range keys {
			b.WriteString(","[:min(j, 1)])
			writeJSONString(b, n.Content[i].Value)
			b.WriteByte(':')
			writeCanonicalJSON(b, n.Content[i+1])
		}
		b.WriteByte('}')
	case n.Kind == yaml.SequenceNode:
		b.WriteByte('[')
		for j, c := range n.Content {
			b.WriteString(","[:min(j, 1)])
			writeCanonicalJSON(b, c)
		}
		b.WriteByte(']')
	case n.Tag == "!!null" || n.Tag == "!!bool" || n.Tag == "!!int":
		b.WriteString(n.Value)
	case n.Tag == "!"+string(SignatureOstreeRemote):
		b.WriteString(`{"ostreeRemote":`)
		writeJSONString(b, n.Value)
		b.WriteByte('}')
	default:
		writeJSONString(b, n.Value)
	}
}

// writeJSONString escapes as RFC 8785 (and serde_json) do: only '"', '\\' and control
// characters, the latter as \b \t \n \f \r or \u00xx; nothing else, not even U+2028.
func writeJSONString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		if e := strings.IndexRune("\"\\\b\t\n\f\r", r); e >= 0 {
			b.WriteString(`\` + `"\btnfr`[e:e+1])
		} else if r < 0x20 {
			fmt.Fprintf(b, `\u%04x`, r)
		} else {
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// decodeValue reads n into v by serde's rules for v's type: an Option (pointer, map) is
// None when null; a string takes any scalar but null (serde_yaml reads a plain 20231230.1
// as the string it looks like); a bool or an integer only a plain scalar; an enum field
// only its variant names; a struct ignores fields it does not know (bootc has no
// deny_unknown_fields) and refuses a missing one that is neither an Option nor defaulted.
func decodeValue(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	quoted := n.Style&^(yaml.TaggedStyle|yaml.FlowStyle) != 0 || n.Tag == "!!str" // not plain
	null, t := n.Kind == yaml.ScalarNode && n.Tag == "!!null" && !quoted, v.Type()
	sub := func(key string) string { return strings.TrimPrefix(path+"."+key, ".") } // status.booted
	wrong := func(want string) error {
		what := map[yaml.Kind]string{yaml.MappingNode: "a map", yaml.SequenceNode: "a sequence"}[n.Kind]
		return fmt.Errorf("%s: %s is not %s", cmp.Or(path, "document"), cmp.Or(what, strconv.Quote(n.Value)), want)
	}
	switch k := v.Kind(); {
	case (k == reflect.Pointer || k == reflect.Map) && null:
		v.SetZero()
	case k == reflect.Pointer:
		v.Set(reflect.New(t.Elem()))
		return decodeValue(n, v.Elem(), path)
	case t == reflect.TypeFor[time.Time]():
		ts, err := parseTimestamp(n.Value)
		if n.Kind != yaml.ScalarNode || null || err != nil {
			return wrong("an RFC 3339 timestamp")
		}
		v.Set(reflect.ValueOf(ts))
	case t == reflect.TypeFor[ImageSignature]():
		remote := n.Tag == "!"+string(SignatureOstreeRemote)
		if n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[0].Value == string(SignatureOstreeRemote) {
			n, remote = n.Content[1], true // JSON's form of the newtype variant
		}
		sig := ImageSignature{Kind: SignatureKind(n.Value)}
		if remote {
			sig = ImageSignature{Kind: SignatureOstreeRemote, OstreeRemote: n.Value}
		}
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" ||
			!remote && sig.Kind != SignatureContainerPolicy && sig.Kind != SignatureInsecure {
			return wrong(`{"ostreeRemote": NAME}, "containerPolicy" or "insecure"`)
		}
		v.Set(reflect.ValueOf(sig))
	case k == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return wrong("a map")
		}
		fields, seen := wireFields(t), map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if seen[key] {
				return fmt.Errorf("%s: duplicate field %q", cmp.Or(path, "document"), key)
			}
			seen[key] = true
			j := slices.IndexFunc(fields, func(f wireField) bool { return f.name == key })
			if j < 0 {
				continue
			}
			fv := v.Field(fields[j].index)
			if err := decodeValue(n.Content[i+1], fv, sub(key)); err != nil {
				return err
			}
			if e := reflect.Indirect(fv); e.IsValid() && len(fields[j].enum) > 0 && !slices.Contains(fields[j].enum, e.String()) {
				return fmt.Errorf("%s: %q is not %s", sub(key), e.String(), strings.Join(fields[j].enum, " or "))
			}
		}
		for _, f := range fields {
			if !seen[f.name] && !f.optional {
				return fmt.Errorf("%s: missing field %q", cmp.Or(path, "document"), f.name)
			}
		}
	case k == reflect.Map: // of strings
		if n.Kind != yaml.MappingNode {
			return wrong("a map")
		}
		v.Set(reflect.MakeMap(t))
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, e := n.Content[i].Value, reflect.New(t.Elem()).Elem()
			if err := decodeValue(n.Content[i+1], e, sub(key)); err != nil {
				return err
			}
			v.SetMapIndex(reflect.ValueOf(key), e)
		}
	case k == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return wrong("a sequence")
		}
		v.Set(reflect.MakeSlice(t, len(n.Content), len(n.Content)))
		for i, c := range n.Content {
			if err := decodeValue(c, v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case k == reflect.Bool:
		b, ok := map[string]bool{"true": true, "True": true, "TRUE": true, "false": false, "False": false, "FALSE": false}[n.Value]
		if n.Kind != yaml.ScalarNode || quoted || !ok {
			return wrong("a bool")
		}
		v.SetBool(b)
	case k == reflect.Uint32: // decimal; serde_yaml also reads 0x, 0o and 0b, which no one writes here
		u, err := strconv.ParseUint(strings.TrimPrefix(n.Value, "+"), 10, 32)
		if n.Kind != yaml.ScalarNode || quoted || err != nil || digitsButNotNumber(n.Value) {
			return wrong("an unsigned 32-bit integer")
		}
		v.SetUint(u)
	case k == reflect.String:
		if n.Kind != yaml.ScalarNode || null {
			return wrong("a string")
		}
		v.SetString(n.Value)
	}
	return nil
}
