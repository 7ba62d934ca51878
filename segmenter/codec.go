package segmenter

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/heraldhq/herald/schemas"
)

// Profile encoding, version 3 (2 lacks what is marked v3, 1 also the source
// position; both still decode). Little endian, varints as encoding/binary
// writes them, strings as uvarint length + bytes, times as uvarint
// microseconds since 0001-01-01 UTC (0 is the zero time):
//
//	byte     version (1)
//	byte     flags: 1 registered, 2 opted out
//	varint   device type
//	string   user id, language, timezone, country, whatsapp
//	time     first seen, last seen, last inbound
//	uvarint  tag count, then per tag: string name, tag value, where a tag
//	         value is byte kind, then (string: string; number: 8-byte
//	         float64; bool: byte; list: uvarint count + strings)
//	uvarint  event-name count, then per name: string, uvarint count, time
//	         last, (v3) time first, uvarint attribute count + per attribute
//	         string name and tag value
//	byte     recent id count, then 8 bytes per id hash
//	varint   source partition, uvarint next source offset (0: none)
//	(v3)     string email, uvarint push token count + strings, string app
//	         version, time first install, uvarint segment count + 8 bytes
//	         per segment id (sorted), uvarint campaign send count + per
//	         send time and 8-byte campaign hash and (v4) a flags byte
//	         (1: marketing; v3 sends were all marketing)
//	(v4)     uvarint journey run count + per run 8-byte journey hash,
//	         uvarint version, uvarint step, time deadline, time entered,
//	         uvarint seq, 8-byte last send hash; uvarint finished journey
//	         count + 8-byte hashes
//	(v5)     string merged-into profile key (a forwarder's, else empty);
//	         uvarint merge count + 8-byte hashes of the profile keys merged
//	         in (low bit set) or asked for (clear)
//
// The cache holds the same encoding with two differences (the cache form,
// never written to the changelog): cacheForm is set in the version byte,
// and each tag name is a uvarint reference to the process's name
// dictionary (number + 1), or 0 and the name in full. A profile of 10 tags
// takes about 70 bytes less in the cache that way.
//
// A profile with 9 tags and 10 event names takes 433 bytes against 1557 in
// JSON, encodes 25 times and decodes 9 times faster (BenchmarkProfileCodec).
const profileVersion = 5

// sendMarketing flags a MARKETING campaign send (v4).
const sendMarketing = 1

// wireInteger is the tag kind byte of a TagNumber holding a whole number
// (v4), written as a varint.
const wireInteger = 5

// eventNames are the event names encoded as one byte (v4): the default
// events every profile has. Append only: the codes are in changelogs.
var eventNames = [...]string{
	1: schemas.EventDeviceRegistered, schemas.EventDeviceUnregistered, schemas.EventApplicationOpen,
	schemas.EventScreenOpen, schemas.EventInAppPurchase, schemas.EventWhatsAppReceived, schemas.EventWhatsAppStatus,
	schemas.EventPageView, schemas.EventGroup, schemas.EventUserRegistered, schemas.EventSegmentEntered, schemas.EventSegmentExited,
}

// eventCodes are eventNames' codes by name.
var eventCodes = func() map[string]byte {
	m := make(map[string]byte, len(eventNames))
	for i, n := range eventNames {
		if i > 0 {
			m[n] = byte(i)
		}
	}
	return m
}()

// appendEventName appends an event name: a default event's code after a
// zero length (v4), any other name as a string (an empty one as zero
// length and code 0).
func appendEventName(b []byte, name string) []byte {
	if code, ok := eventCodes[name]; ok {
		return append(b, 0, code)
	}
	if name == "" {
		return append(b, 0, 0)
	}
	return appendString(b, name)
}

// zones are the time zones encoded as a number (v4), by code.
//
//go:embed zones.txt
var zonesFile string

var zones, zoneCodes = func() ([]string, map[string]uint64) {
	l := []string{""}
	m := map[string]uint64{}
	for line := range strings.Lines(zonesFile) {
		if z := strings.TrimSpace(line); z != "" && !strings.HasPrefix(z, "#") {
			m[z] = uint64(len(l))
			l = append(l, z)
		}
	}
	return l, m
}()

// appendZone appends a time zone: a known IANA name's code after a zero
// length (v4), any other as a string (an empty one as zero length and code
// 0).
func appendZone(b []byte, tz string) []byte {
	if code, ok := zoneCodes[tz]; ok {
		return binary.AppendUvarint(append(b, 0), code)
	}
	if tz == "" {
		return append(b, 0, 0)
	}
	return appendString(b, tz)
}

// zone reads what appendZone wrote (a plain string before v4).
func (d *decoder) zone(version byte) string {
	if version < 4 || len(d.b) == 0 || d.b[0] != 0 {
		return d.string("timezone")
	}
	d.b = d.b[1:]
	code := d.uvarint("timezone code")
	if code >= uint64(len(zones)) {
		d.fail("timezone code")
		return ""
	}
	return zones[code]
}

// appendTimeRel appends t relative to base (v4): 0 for the zero time, else
// 1 plus the zigzag-encoded microseconds from base (from year 1 when base
// is zero). Times of one profile are close together, so most take one to
// four bytes instead of eight.
func appendTimeRel(b []byte, t, base time.Time) []byte {
	if t.IsZero() || t.Before(time.Time{}) {
		return append(b, 0)
	}
	ref := zeroMicros
	if !base.IsZero() && !base.Before(time.Time{}) {
		ref = base.UnixMicro()
	}
	delta := t.UnixMicro() - ref
	return binary.AppendUvarint(b, uint64(delta<<1^delta>>63)+1)
}

// timeRel reads what appendTimeRel wrote (an absolute time before v4).
func (d *decoder) timeRel(version byte, what string, base time.Time) time.Time {
	if version < 4 {
		return d.time(what)
	}
	v := d.uvarint(what)
	if v == 0 {
		return time.Time{}
	}
	z := v - 1
	delta := int64(z>>1) ^ -int64(z&1)
	ref := zeroMicros
	if !base.IsZero() {
		ref = base.UnixMicro()
	}
	return time.UnixMicro(ref + delta).UTC()
}

// eventName reads what appendEventName wrote (a plain string before v4).
func (d *decoder) eventName(version byte) string {
	if version < 4 || len(d.b) == 0 || d.b[0] != 0 {
		return d.string("event name")
	}
	d.b = d.b[1:]
	code := d.byte("event name code")
	if int(code) >= len(eventNames) {
		d.fail("event name code")
		return ""
	}
	return eventNames[code]
}

const (
	flagRegistered = 1 << iota
	flagOptedOut
)

// cacheForm is set in the version byte of the cache's encoding of a
// profile (appendProfiles), never in the changelog's: its tag names refer
// to this process's name dictionary.
const cacheForm = 0x80

// maxNames bounds the name dictionary: names past it are written in full.
const maxNames = 4096

// names is the process's tag name dictionary: a name's number is its
// position, given on first use and never changed while the process runs
// (the cache, which alone uses it, does not outlive the process).
var names = newNameDict()

// nameDict hands out dictionary numbers. Readers load an immutable table;
// a new name copies it (at most maxNames times in a process's life).
type nameDict struct {
	mu  sync.Mutex
	cur atomic.Pointer[nameTable]
}

// nameTable is one version of the dictionary.
type nameTable struct {
	d     *nameDict
	ids   map[string]uint64
	names []string
}

func newNameDict() *nameDict {
	d := &nameDict{}
	d.cur.Store(&nameTable{d: d, ids: map[string]uint64{}})
	return d
}

// load returns the current table.
func (d *nameDict) load() *nameTable { return d.cur.Load() }

// add returns name's number, adding it when there is room; ok is false
// when the dictionary is full.
func (d *nameDict) add(name string) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.cur.Load()
	if id, ok := t.ids[name]; ok {
		return id, true
	}
	if len(t.names) >= maxNames {
		return 0, false
	}
	next := &nameTable{d: d, ids: make(map[string]uint64, len(t.ids)+1), names: append(t.names[:len(t.names):len(t.names)], name)}
	for k, v := range t.ids {
		next.ids[k] = v
	}
	id := uint64(len(t.names))
	next.ids[name] = id
	d.cur.Store(next)
	return id, true
}

// appendRef appends name as a reference: uvarint number + 1, or 0 and the
// name in full when the dictionary has no room for it.
func (t *nameTable) appendRef(b []byte, name string) []byte {
	id, ok := t.ids[name]
	if !ok {
		if id, ok = t.d.add(name); !ok {
			return appendString(append(b, 0), name)
		}
	}
	return binary.AppendUvarint(b, id+1)
}

// appendRefBytes is appendRef of a name in bytes (no string made for a
// name the dictionary holds).
func (t *nameTable) appendRefBytes(b, name []byte) []byte {
	if id, ok := t.ids[string(name)]; ok {
		return binary.AppendUvarint(b, id+1)
	}
	return t.appendRef(b, string(name))
}

// nameRef reads what appendRef wrote. A number the table t does not hold
// yet may have been added since t was loaded: the current one is asked.
func (d *decoder) nameRef(t *nameTable) string {
	ref := d.uvarint("tag name")
	if d.err != nil {
		return ""
	}
	if ref == 0 {
		return d.string("tag name")
	}
	if ref-1 >= uint64(len(t.names)) {
		if t = t.d.load(); ref-1 >= uint64(len(t.names)) {
			d.fail("tag name reference")
			return ""
		}
	}
	return t.names[ref-1]
}

// zeroMicros is time.Time{} in Unix microseconds: times are stored relative
// to it, so the zero time is 0 and every time JSON can carry is positive.
var zeroMicros = time.Time{}.UnixMicro()

// errCorrupt is returned by decodeProfile for bytes it did not write.
var errCorrupt = errors.New("corrupt profile encoding")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() || t.Before(time.Time{}) {
		return append(b, 0)
	}
	return binary.AppendUvarint(b, uint64(t.UnixMicro()-zeroMicros))
}

// appendProfile appends the encoding of p to b: the changelog's form,
// self-contained.
func appendProfile(b []byte, p *Profile) []byte {
	b, _ = appendProfiles(b, nil, p, false)
	return b
}

// appendProfiles appends p's changelog encoding to logb and, when cache is
// set, its cache encoding to cacheb: the same bytes but for the version
// byte (cacheForm set) and the tag names, which the cache form writes as
// references to the process's name dictionary (names) when it holds them.
// A profile's tag names are a third of its bytes; the cache holds every
// profile and the dictionary each name once.
func appendProfiles(logb, cacheb []byte, p *Profile, cache bool) ([]byte, []byte) {
	var flags byte
	if p.Registered {
		flags |= flagRegistered
	}
	if p.OptedOut {
		flags |= flagOptedOut
	}
	l0, c0 := len(logb), len(cacheb)
	logb = append(logb, profileVersion, flags)
	logb = binary.AppendVarint(logb, int64(p.DeviceType))
	logb = appendString(logb, p.UserID)
	logb = appendString(logb, p.Language)
	logb = appendZone(logb, p.Timezone)
	logb = appendString(logb, p.Country)
	logb = appendString(logb, p.WhatsApp)
	logb = appendTime(logb, p.FirstSeen)
	logb = appendTimeRel(logb, p.LastSeen, p.FirstSeen)
	logb = appendTimeRel(logb, p.LastInbound, p.LastSeen)
	logb = binary.AppendUvarint(logb, uint64(p.tagCount()))
	if cache {
		cacheb = append(cacheb, logb[l0:]...)
		cacheb[c0] |= cacheForm
	}
	switch {
	case p.rawTags != "":
		logb, cacheb = appendRawTags(logb, cacheb, p, cache)
	case cache:
		dict := names.load()
		for name, t := range p.tags {
			logb = appendString(logb, name)
			v := len(logb)
			logb = appendTag(logb, t)
			cacheb = append(dict.appendRef(cacheb, name), logb[v:]...)
		}
	default:
		for name, t := range p.tags {
			logb = appendString(logb, name)
			logb = appendTag(logb, t)
		}
	}
	rest := len(logb)
	logb = appendProfileRest(logb, p)
	if cache {
		cacheb = append(cacheb, logb[rest:]...)
	}
	return logb, cacheb
}

// appendRawTags appends the tags p keeps encoded (Profile.rawTags) in the
// changelog's form to logb and, when cache is set, in the cache's to cacheb:
// the form they are in is copied, the other has each name rewritten (a
// reference looked up, or a name given one). The values are copied.
func appendRawTags(logb, cacheb []byte, p *Profile, cache bool) ([]byte, []byte) {
	// (rawTags was checked when it was decoded: no error to look for)
	if !p.rawCached {
		logb = append(logb, p.rawTags...)
		if cache {
			i := 0
			cacheb, _ = appendTagRefs(cacheb, bytesOf(p.rawTags), &i, uint64(p.rawTagCount))
		}
		return logb, cacheb
	}
	if cache {
		cacheb = append(cacheb, p.rawTags...)
	}
	d := decoderOf(p.rawTags)
	return appendLogTags(logb, &d, p.rawTagCount, names.load()), cacheb
}

// appendLogTags reads n tags in the cache's form from d and appends them
// to logb in the changelog's: each name reference resolved in dict, the
// value copied. d's error is set when they do not decode.
func appendLogTags(logb []byte, d *decoder, n int, dict *nameTable) []byte {
	for range n {
		name := d.nameRef(dict)
		v := d.off()
		d.skipTag()
		if d.err != nil {
			return logb
		}
		logb = append(appendString(logb, name), d.all[v:d.off()]...)
	}
	return logb
}

// tagName reads a tag's name: a reference to dict in the cache form
// (cached), the name itself in the changelog's.
func (d *decoder) tagName(cached bool, dict *nameTable) string {
	if cached {
		return d.nameRef(dict)
	}
	return d.string("tag name")
}

// loadTags decodes the tags p keeps encoded into p.tags.
func (p *Profile) loadTags() {
	d, dict := decoderOf(p.rawTags), names.load()
	p.tags = make(map[string]Tag, p.rawTagCount)
	p.tagsPlain = true
	for range p.rawTagCount {
		name := d.tagName(p.rawCached, dict)
		p.tags[name] = d.tag() // (rawTags was checked when it was decoded)
		p.tagsPlain = p.tagsPlain && !fieldOverride(name)
	}
	p.rawTags, p.rawTagCount, p.rawCached = "", 0, false
}

// cacheEncoding returns the cache form of val, a changelog encoding, in
// cacheb (logb is scratch): val itself when it does not decode (the lookup
// that meets it reports it). A version 4 or 5 encoding is rewritten in place of
// its tag names without being decoded (restore does this for every
// profile); older ones are decoded and encoded again.
func cacheEncoding(logb, cacheb, val []byte) ([]byte, []byte) {
	if out, ok := transcodeCache(cacheb, val); ok {
		return logb, out
	}
	p, err := decodeProfile(val)
	if err != nil {
		return logb, append(cacheb, val...)
	}
	return appendProfiles(logb, cacheb, p, true)
}

// transcodeCache appends the cache form of val, a version 4 or 5 changelog
// encoding, to dst: it copies val but for the version byte and the tag
// names. ok is false when val is not a well-formed version 4 or 5 encoding up
// to the end of its tags (dst is then unchanged).
func transcodeCache(dst, val []byte) (out []byte, ok bool) {
	if len(val) < 2 || val[0] < 4 || val[0] > profileVersion {
		return dst, false // (4 and 5 differ only past the tags)
	}
	i := 2
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(val[i:])
		if n <= 0 {
			return 0, false
		}
		i += n
		return v, true
	}
	str := func() ([]byte, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(val)-i) {
			return nil, false
		}
		s := val[i : i+int(n)]
		i += int(n)
		return s, true
	}
	_, n := binary.Varint(val[i:]) // device type
	if n <= 0 {
		return dst, false
	}
	i += n
	for range 2 { // user id, language
		if _, ok := str(); !ok {
			return dst, false
		}
	}
	if z, ok := str(); !ok { // time zone: a string, or 0 and a code
		return dst, false
	} else if len(z) == 0 {
		if _, ok := uv(); !ok {
			return dst, false
		}
	}
	for range 2 { // country, whatsapp
		if _, ok := str(); !ok {
			return dst, false
		}
	}
	for range 3 { // first seen, last seen, last inbound
		if _, ok := uv(); !ok {
			return dst, false
		}
	}
	tags, ok := uv()
	if !ok || tags > uint64(len(val)-i) {
		return dst, false
	}
	start := len(dst)
	dst = append(dst, val[:i]...)
	dst[start] |= cacheForm
	if dst, ok = appendTagRefs(dst, val, &i, tags); !ok {
		return dst[:start], false
	}
	return append(dst, val[i:]...), true
}

// appendTagRefs appends to dst the cache form of the n tags at val[*i:],
// written in the changelog's: each name as a reference to names, the value
// copied. *i moves past them; ok is false when they are malformed.
func appendTagRefs(dst, val []byte, i *int, n uint64) (out []byte, ok bool) {
	dict := names.load()
	for range n {
		l, w := binary.Uvarint(val[*i:])
		if w <= 0 || l > uint64(len(val)-*i-w) {
			return dst, false
		}
		name := val[*i+w : *i+w+int(l)]
		*i += w + int(l)
		v := *i
		if !skipTag(val, i) {
			return dst, false
		}
		dst = append(dict.appendRefBytes(dst, name), val[v:*i]...)
	}
	return dst, true
}

// skipTag moves *i past the tag value at val[*i:], as appendTag wrote it;
// false when it is malformed.
func skipTag(val []byte, i *int) bool {
	if *i >= len(val) {
		return false
	}
	kind := val[*i]
	*i++
	skipStr := func() bool {
		n, w := binary.Uvarint(val[*i:])
		if w <= 0 || n > uint64(len(val)-*i-w) {
			return false
		}
		*i += w + int(n)
		return true
	}
	switch TagKind(kind) {
	case wireInteger:
		_, w := binary.Varint(val[*i:])
		*i += w
		return w > 0
	case TagString:
		return skipStr()
	case TagNumber:
		*i += 8
		return *i <= len(val)
	case TagBool:
		*i++
		return *i <= len(val)
	case TagList:
		n, w := binary.Uvarint(val[*i:])
		if w <= 0 || n > uint64(len(val)-*i) {
			return false
		}
		*i += w
		for range n {
			if !skipStr() {
				return false
			}
		}
		return true
	}
	return false
}

// appendProfileRest appends what follows the tags in a profile's encoding.
func appendProfileRest(b []byte, p *Profile) []byte {
	b = binary.AppendUvarint(b, uint64(len(p.Events)))
	for _, c := range p.Events {
		b = appendEventName(b, c.Name)
		b = binary.AppendUvarint(b, c.Count)
		b = appendTimeRel(b, c.Last, p.LastSeen)
		b = appendTimeRel(b, c.First, c.Last)
		if c.raw != "" {
			b = append(b, c.raw...)
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(c.attrs)))
		for _, a := range c.attrs {
			b = appendString(b, a.Name)
			b = appendTag(b, a.Tag)
		}
	}
	b = append(b, p.nRecent)
	for _, h := range p.recentIDs() {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	b = binary.AppendVarint(b, int64(p.src.partition))
	b = binary.AppendUvarint(b, uint64(max(p.src.next, 0)))
	b = appendString(b, p.Email)
	b = binary.AppendUvarint(b, uint64(len(p.PushTokens)))
	for _, tok := range p.PushTokens {
		b = appendString(b, tok)
	}
	b = appendString(b, p.AppVersion)
	b = appendTimeRel(b, p.FirstInstall, p.FirstSeen)
	b = binary.AppendUvarint(b, uint64(len(p.segments)))
	for _, id := range p.segments {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	b = binary.AppendUvarint(b, uint64(len(p.sends)))
	for _, m := range p.sends {
		b = appendTimeRel(b, m.at, p.LastSeen)
		b = binary.LittleEndian.AppendUint64(b, m.campaign)
		var f byte
		if m.marketing {
			f = sendMarketing
		}
		b = append(b, f)
	}
	b = binary.AppendUvarint(b, uint64(len(p.journeys)))
	for _, r := range p.journeys {
		b = binary.LittleEndian.AppendUint64(b, r.journey)
		b = binary.AppendUvarint(b, uint64(r.version))
		b = binary.AppendUvarint(b, uint64(r.step))
		b = appendTimeRel(b, r.deadline, p.LastSeen)
		b = appendTimeRel(b, r.entered, p.LastSeen)
		b = binary.AppendUvarint(b, uint64(r.seq))
		b = binary.LittleEndian.AppendUint64(b, r.lastSend)
	}
	b = binary.AppendUvarint(b, uint64(len(p.done)))
	for _, h := range p.done {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	b = appendString(b, p.mergedInto)
	b = binary.AppendUvarint(b, uint64(len(p.merges)))
	for _, h := range p.merges {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	return b
}

// appendTag appends the kind and value of t.
func appendTag(b []byte, t Tag) []byte {
	switch t.Kind {
	case TagString:
		b = appendString(append(b, byte(TagString)), t.Str)
	case TagNumber:
		if i := int64(t.Num); float64(i) == t.Num && i > -1<<53 && i < 1<<53 && !(i == 0 && math.Signbit(t.Num)) {
			// Whole numbers (counts, points, ids) in a varint, not 8 bytes.
			return binary.AppendVarint(append(b, wireInteger), i)
		}
		b = binary.LittleEndian.AppendUint64(append(b, byte(TagNumber)), math.Float64bits(t.Num))
	case TagBool:
		v := byte(0)
		if t.Bool {
			v = 1
		}
		b = append(b, byte(TagBool), v)
	case TagList:
		b = binary.AppendUvarint(append(b, byte(TagList)), uint64(len(t.List)))
		for _, s := range t.List {
			b = appendString(b, s)
		}
	default:
		b = append(b, byte(t.Kind))
	}
	return b
}

// tag reads a value written by appendTag.
func (d *decoder) tag() Tag {
	t := Tag{Kind: TagKind(d.byte("tag kind"))}
	switch t.Kind {
	case wireInteger:
		t.Kind, t.Num = TagNumber, float64(d.varint("tag value"))
		return t
	case TagString:
		t.Str = d.string("tag value")
	case TagNumber:
		t.Num = math.Float64frombits(d.uint64("tag value"))
	case TagBool:
		t.Bool = d.byte("tag value") != 0
	case TagList:
		if m := d.count("tag list length", 1); m > 0 {
			t.List = make([]string, m)
			for i := range t.List {
				t.List[i] = d.string("tag list item")
			}
		} else {
			t.List = []string{}
		}
	default:
		d.fail("tag kind")
	}
	return t
}

// skipAttrs reads an event's attributes and returns their bytes, "" when
// there are none (EventCount.raw).
func (d *decoder) skipAttrs() string {
	start := d.off()
	m := d.count("event attribute count", 3)
	for range m {
		d.string("event attribute name")
		d.skipTag()
	}
	if m == 0 || d.err != nil {
		return ""
	}
	return d.all[start:d.off()]
}

// skipTag reads a value written by appendTag, building nothing.
func (d *decoder) skipTag() {
	i := 0
	if !skipTag(d.b, &i) {
		d.fail("tag value")
		return
	}
	d.b = d.b[i:]
}

// attrs reads what skipAttrs read, building the attributes.
func (d *decoder) attrs() []Attr {
	m := d.count("event attribute count", 3)
	if m == 0 {
		return nil
	}
	attrs := make([]Attr, m)
	for j := range attrs {
		attrs[j].Name = d.string("event attribute name")
		attrs[j].Tag = d.tag()
	}
	return attrs
}

// findAttr reads what skipAttrs read, building only the value of the
// attribute name.
func (d *decoder) findAttr(name string) (Tag, bool) {
	for range d.count("event attribute count", 3) {
		if d.string("event attribute name") == name {
			return d.tag(), d.err == nil
		}
		d.skipTag()
	}
	return Tag{}, false
}

// decoder reads an encoding; the first error sticks and later reads return
// zero values. Strings are slices of one copy of the whole encoding (one
// allocation per profile instead of one per string).
type decoder struct {
	b   []byte
	all string // copy of the encoding; b is its unread suffix
	err error
}

// decoderOf reads s in place: b is s's own bytes, which a decoder only reads,
// so reading a part of a decoded profile (EventCount.raw) copies nothing.
func decoderOf(s string) decoder { return decoder{b: bytesOf(s), all: s} }

// bytesOf is s's own bytes, for reading only.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// off is the offset in all of what d reads next.
func (d *decoder) off() int { return len(d.all) - len(d.b) }

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: reading %s", errCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte(what string) byte {
	if len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint64(what string) uint64 {
	if len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) string(what string) string {
	n := d.uvarint(what)
	if n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	off := d.off()
	d.b = d.b[n:]
	return d.all[off : off+int(n)]
}

// count reads a count of elements of at least minSize bytes each, refusing
// counts the remaining bytes cannot hold (no huge allocation on bad input).
func (d *decoder) count(what string, minSize int) int {
	n := d.uvarint(what)
	if n > uint64(len(d.b)/minSize) {
		d.fail(what)
		return 0
	}
	return int(n)
}

func (d *decoder) time(what string) time.Time {
	v := d.uvarint(what)
	if v == 0 || v > math.MaxInt64 {
		return time.Time{}
	}
	return time.UnixMicro(int64(v) + zeroMicros).UTC()
}

// decodeProfile decodes an encoding written by appendProfile.
func decodeProfile(b []byte) (*Profile, error) {
	d := decoderOf(string(b))
	version := d.byte("version")
	cached := version&cacheForm != 0
	version &^= cacheForm
	if d.err == nil && (version < 1 || version > profileVersion || cached && version < 4) {
		return nil, fmt.Errorf("%w: version %d", errCorrupt, version)
	}
	var dict *nameTable
	if cached {
		dict = names.load()
	}
	p := new(Profile)
	flags := d.byte("flags")
	p.Registered = flags&flagRegistered != 0
	p.OptedOut = flags&flagOptedOut != 0
	p.DeviceType = int(d.varint("device type"))
	p.UserID = d.string("user id")
	p.Language = d.string("language")
	p.Timezone = d.zone(version)
	p.Country = d.string("country")
	p.WhatsApp = d.string("whatsapp")
	p.FirstSeen = d.time("first seen")
	p.LastSeen = d.timeRel(version, "last seen", p.FirstSeen)
	p.LastInbound = d.timeRel(version, "last inbound", p.LastSeen)
	if n := d.count("tag count", 3); n > 0 {
		start := d.off()
		for range n {
			d.tagName(cached, dict)
			d.skipTag()
			if d.err != nil {
				return nil, d.err
			}
		}
		p.rawTags, p.rawTagCount, p.rawCached = d.all[start:d.off()], n, cached
	}
	if n := d.count("event count", 3); n > 0 {
		p.Events = make([]EventCount, n)
		for i := range p.Events {
			c := &p.Events[i]
			c.Name = d.eventName(version)
			c.Count = d.uvarint("event count")
			c.Last = d.timeRel(version, "event time", p.LastSeen)
			if version < 3 {
				continue
			}
			c.First = d.timeRel(version, "event first time", c.Last)
			c.raw = d.skipAttrs()
			if d.err != nil {
				return nil, d.err
			}
		}
		p.tagEvents()
	}
	if n := int(d.byte("recent count")); n > len(d.b)/8 {
		d.fail("recent ids")
	} else {
		// More than recentIDs was not written by this version (apply
		// keeps recentIDs): the newest of them are kept.
		for range n {
			p.noteRecent(d.uint64("recent id"))
		}
	}
	if version >= 2 {
		part := d.varint("source partition")
		next := d.uvarint("source offset")
		if part < 0 || part > math.MaxInt32 || next > math.MaxInt64 {
			d.fail("source position")
		} else {
			p.src = srcPos{partition: int32(part), next: int64(next)}
		}
	}
	if version >= 3 {
		p.Email = d.string("email")
		if n := d.count("push token count", 1); n > 0 {
			p.PushTokens = make([]string, n)
			for i := range p.PushTokens {
				p.PushTokens[i] = d.string("push token")
			}
		}
		p.AppVersion = d.string("app version")
		p.FirstInstall = d.timeRel(version, "first install", p.FirstSeen)
		if n := d.count("segment count", 8); n > 0 {
			p.segments = make([]uint64, n)
			for i := range p.segments {
				p.segments[i] = d.uint64("segment id")
			}
		}
		if n := d.count("send count", 9); n > 0 {
			p.sends = make([]sentMark, n)
			for i := range p.sends {
				p.sends[i] = sentMark{at: d.timeRel(version, "send time", p.LastSeen), campaign: d.uint64("send campaign"), marketing: true}
				if version >= 4 {
					p.sends[i].marketing = d.byte("send flags")&sendMarketing != 0
				}
			}
		}
		if version >= 4 {
			if n := d.count("journey count", 12); n > 0 {
				p.journeys = make([]journeyRun, n)
				for i := range p.journeys {
					r := &p.journeys[i]
					r.journey = d.uint64("journey")
					r.version = uint32(d.uvarint("journey version"))
					r.step = uint32(d.uvarint("journey step"))
					r.deadline = d.timeRel(version, "journey deadline", p.LastSeen)
					r.entered = d.timeRel(version, "journey entered", p.LastSeen)
					r.seq = uint32(d.uvarint("journey seq"))
					r.lastSend = d.uint64("journey last send")
				}
			}
			if n := d.count("journeys done", 8); n > 0 {
				p.done = make([]uint64, n)
				for i := range p.done {
					p.done[i] = d.uint64("journey done")
				}
			}
		}
		if version >= 5 {
			p.mergedInto = d.string("merged into")
			if n := d.count("merge count", 8); n > 0 {
				p.merges = make([]uint64, n)
				for i := range p.merges {
					p.merges[i] = d.uint64("merge")
				}
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	return p, nil
}
