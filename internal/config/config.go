// Package config is the configuration of sluiced: one plain struct with
// its defaults in one place, read from an optional YAML file and then from
// SLUICE_* environment variables, which win.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/internal/streaming"
)

// Config is every setting of sluiced. The YAML key of a field is its tag;
// its environment variable is SLUICE_ followed by the path of keys in upper
// snake case: gc.gracePeriod is SLUICE_GC_GRACE_PERIOD.
type Config struct {
	// Listen is the address the registry serves on.
	Listen string `yaml:"listen"`
	// Data is the directory of the embedded stores: the SQLite file, the
	// blob directory and the token signing keys. A relative directory is
	// taken from the working directory sluiced starts in.
	Data string `yaml:"data"`
	// AdminUser is the admin's user name (SLUICE_ADMIN_USER).
	AdminUser string `yaml:"adminUser"`
	// AdminPassword sets the admin's password (SLUICE_ADMIN_PASSWORD);
	// without one, a password is generated on first start and printed
	// once.
	AdminPassword string `yaml:"adminPassword"`
	// DrainDelay is how long, after SIGTERM, sluiced keeps serving while
	// /readyz already fails, so that a load balancer stops sending it
	// requests before it stops taking them; then in-flight requests
	// finish and it exits.
	DrainDelay Duration   `yaml:"drainDelay"`
	Auth       Auth       `yaml:"auth"`
	TLS        TLS        `yaml:"tls"`
	Storage    Storage    `yaml:"storage"`
	Database   Database   `yaml:"database"`
	GC         GC         `yaml:"gc"`
	Log        Log        `yaml:"log"`
	Streaming  Streaming  `yaml:"streaming"`
	SoftDelete SoftDelete `yaml:"softDelete"`
	Usage      Usage      `yaml:"usage"`
	Portal     Portal     `yaml:"portal"`
}

// Portal is the web portal served at / beside the APIs.
type Portal struct {
	// Enabled serves the portal (default true).
	Enabled bool `yaml:"enabled"`
}

// Streaming tunes artifact streaming conversions.
type Streaming struct {
	// Workers is how many conversions (and imports) one process runs at
	// once; 0 makes a serving replica only queue them, for `sluiced
	// worker` processes to run.
	Workers int `yaml:"workers"`
	// Lease is how long a worker holds an operation without a heartbeat:
	// after a crash, its operations resume once their lease runs out.
	Lease Duration `yaml:"lease"`
	// ConversionMemory is the heap, in bytes, one conversion may hold
	// (default 256 MiB): the converter runs as many parallel compressors
	// as fit, and refuses a zstd layer whose window does not.
	ConversionMemory int64 `yaml:"conversionMemory"`
	// MemoryBudget is the heap, in bytes, all conversions of the process
	// may hold together; 0 (the default) is workers × conversionMemory. A
	// conversion waits for its conversionMemory to be free before it
	// converts a layer, so more workers than the budget holds queue rather
	// than exhaust the machine.
	MemoryBudget int64 `yaml:"memoryBudget"`
	// TempDir holds the TOC of a large layer while it is converted (up to
	// limits.maxTOCBytes per conversion); empty is the system's temporary
	// directory.
	TempDir string `yaml:"tempDir"`
	// Limits are what a layer may hold to be converted; docs/security.md
	// explains each.
	Limits StreamingLimits `yaml:"limits"`
}

// ConverterOptions are the converter's options these settings make.
func (s Streaming) ConverterOptions() streaming.Options {
	return streaming.Options{Limits: s.Limits.Streaming(), MemoryBudget: s.ConversionMemory, TempDir: s.TempDir}
}

// minConversionMemory is the least streaming.conversionMemory: below it,
// a conversion's fixed needs alone exceed it.
const minConversionMemory = 128 << 20

// StreamingLimits bound what a pushed layer can make a conversion spend;
// a layer over one fails its conversion with IMAGE_NOT_RUNNABLE naming the
// limit. Defaults are streaming.DefaultLimits.
type StreamingLimits struct {
	// MaxEntries is the most tar entries a layer may have.
	MaxEntries int `yaml:"maxEntries"`
	// MaxPathBytes is the longest entry name or link target, in bytes.
	MaxPathBytes int `yaml:"maxPathBytes"`
	// MaxNameBytes is the longest element of an entry's name, in bytes.
	MaxNameBytes int `yaml:"maxNameBytes"`
	// MaxTOCBytes is the largest TOC as stored (compressed), which is
	// what a node fetches before it mounts the layer.
	MaxTOCBytes int64 `yaml:"maxTOCBytes"`
	// MaxTOCJSONBytes is the largest TOC once decompressed.
	MaxTOCJSONBytes int64 `yaml:"maxTOCJSONBytes"`
	// MaxUncompressedBytes is the largest uncompressed layer.
	MaxUncompressedBytes int64 `yaml:"maxUncompressedBytes"`
	// MaxExpansionRatio is the most a layer may expand (uncompressed over
	// compressed bytes) once it has produced ExpansionGraceBytes.
	MaxExpansionRatio   int64 `yaml:"maxExpansionRatio"`
	ExpansionGraceBytes int64 `yaml:"expansionGraceBytes"`
	// MaxChunkBytes is the largest chunk, uncompressed.
	MaxChunkBytes int64 `yaml:"maxChunkBytes"`
}

// Streaming returns the limits as the converter takes them.
func (l StreamingLimits) Streaming() streaming.Limits {
	return streaming.Limits{
		MaxTOCSize: l.MaxTOCBytes, MaxTOCUncompressedSize: l.MaxTOCJSONBytes, MaxEntries: l.MaxEntries,
		MaxPathBytes: l.MaxPathBytes, MaxNameBytes: l.MaxNameBytes, MaxUncompressedSize: l.MaxUncompressedBytes,
		MaxRatio: l.MaxExpansionRatio, RatioGrace: l.ExpansionGraceBytes, MaxChunkSize: l.MaxChunkBytes,
	}
}

func defaultStreamingLimits() StreamingLimits {
	d := streaming.DefaultLimits
	return StreamingLimits{
		MaxEntries: d.MaxEntries, MaxPathBytes: d.MaxPathBytes, MaxNameBytes: d.MaxNameBytes,
		MaxTOCBytes: d.MaxTOCSize, MaxTOCJSONBytes: d.MaxTOCUncompressedSize, MaxUncompressedBytes: d.MaxUncompressedSize,
		MaxExpansionRatio: d.MaxRatio, ExpansionGraceBytes: d.RatioGrace, MaxChunkBytes: d.MaxChunkSize,
	}
}

// validate refuses a limit that is not positive: zero would not mean
// "no limit", and a silent default would surprise.
func (l StreamingLimits) validate() error {
	v := reflect.ValueOf(l)
	for i := range v.NumField() {
		if v.Field(i).Int() <= 0 {
			return fmt.Errorf("streaming.limits.%s %d: must be positive", v.Type().Field(i).Tag.Get("yaml"), v.Field(i).Int())
		}
	}
	if l.MaxTOCBytes > math.MaxUint32-8 {
		return fmt.Errorf("streaming.limits.maxTOCBytes %d: at most %d (the TOC is one zstd skippable frame)", l.MaxTOCBytes, int64(math.MaxUint32-8))
	}
	return nil
}

// SoftDelete keeps deleted manifests and tags restorable.
type SoftDelete struct {
	Enabled bool `yaml:"enabled"`
	// RetentionDays is how long deleted content stays restorable (1-90).
	RetentionDays int `yaml:"retentionDays"`
}

// Retention is the soft delete retention, zero when soft delete is off.
func (s SoftDelete) Retention() time.Duration {
	if !s.Enabled {
		return 0
	}
	return time.Duration(s.RetentionDays) * 24 * time.Hour
}

// Usage sets what the usage API reports.
type Usage struct {
	// IncludedStorage is the storage, in bytes, the usage API reports as
	// the limit.
	IncludedStorage int64 `yaml:"includedStorage"`
}

// Auth configures authentication and the token service.
type Auth struct {
	// Enabled turns authentication on (the default). Turn it off only
	// behind a proxy that authenticates every request itself.
	Enabled bool `yaml:"enabled"`
	// AnonymousPull lets callers without credentials pull every repository.
	AnonymousPull bool `yaml:"anonymousPull"`
	// Service is the token audience; empty means the host clients reach.
	Service string `yaml:"service"`
	// TokenTTL and RefreshTTL are the lifetimes of access and refresh
	// tokens.
	TokenTTL   Duration `yaml:"tokenTTL"`
	RefreshTTL Duration `yaml:"refreshTTL"`
	// FailedLoginBurst failed logins are allowed per user name and source
	// address, then one per FailedLoginRefill; beyond, that name's logins
	// from that address get 429 with a Retry-After of the real wait.
	// Other names behind the same address (a NAT, a CI runner) are not
	// held back, nor is the name from other addresses. Each name also has
	// ten times the burst across all addresses: once guessing from many
	// addresses has spent it, the addresses that failed for the name wait
	// for it to refill, while an address without failures still gets
	// through.
	FailedLoginBurst  int      `yaml:"failedLoginBurst"`
	FailedLoginRefill Duration `yaml:"failedLoginRefill"`
}

// TLS makes sluiced serve HTTPS.
type TLS struct {
	// Cert and Key are PEM files (--tls-cert, --tls-key).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Storage selects where blobs live.
type Storage struct {
	// URL is a gocloud.dev/blob bucket URL; empty means the directory
	// blobs/ inside Data.
	URL string `yaml:"url"`
	// Redirect answers blob downloads with a redirect to a signed URL of
	// the object store, which then serves the bytes; only for object
	// storage, and for clients that follow redirects (all common ones do).
	Redirect bool `yaml:"redirect"`
}

// Database selects the metadata database.
type Database struct {
	// Driver is "sqlite" (embedded, the default) or "postgres" (shared by
	// several sluiced processes).
	Driver string `yaml:"driver"`
	// DSN is, for sqlite, the database file (empty means sluice.db inside
	// Data; a relative file is taken from the working directory) and, for
	// postgres, the connection URL:
	// postgres://user:password@host:5432/db?sslmode=disable. The flag
	// --database-dsn and SLUICE_DATABASE_DSN keep the password out of the
	// file.
	DSN string `yaml:"dsn"`
}

// GC tunes online garbage collection.
type GC struct {
	Interval    Duration `yaml:"interval"`
	GracePeriod Duration `yaml:"gracePeriod"`
	UploadTTL   Duration `yaml:"uploadTTL"`
}

// Log tunes logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
	// Access logs one line per HTTP request.
	Access bool `yaml:"access"`
}

// Default returns the settings used when nothing is configured.
func Default() Config {
	return Config{
		Listen:    "127.0.0.1:5000",
		Data:      "./data",
		AdminUser: "admin",
		Auth: Auth{Enabled: true, TokenTTL: Duration(5 * time.Minute), RefreshTTL: Duration(3 * time.Hour),
			FailedLoginBurst: 10, FailedLoginRefill: Duration(6 * time.Second)},
		Database: Database{Driver: "sqlite"},
		GC: GC{
			Interval:    Duration(time.Hour),
			GracePeriod: Duration(24 * time.Hour),
			UploadTTL:   Duration(24 * time.Hour),
		},
		Log: Log{Level: "info", Format: "text", Access: true},
		Streaming: Streaming{Workers: 1, Lease: Duration(30 * time.Second),
			ConversionMemory: streaming.DefaultMemoryBudget, Limits: defaultStreamingLimits()},
		SoftDelete: SoftDelete{RetentionDays: 7},
		Usage:      Usage{IncludedStorage: 500 << 30},
		Portal:     Portal{Enabled: true},
	}
}

// Load reads the defaults, then file (if not empty), then the environment,
// then applies flags (the command line's settings), and checks the result.
func Load(file string, environ []string, flags ...func(*Config)) (Config, error) {
	c := Default()
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config %s: %w", file, err)
		}
	}
	if err := applyEnv(reflect.ValueOf(&c).Elem(), "SLUICE", envMap(environ)); err != nil {
		return c, err
	}
	for _, f := range flags {
		f(&c)
	}
	return c, c.Validate()
}

// Validate checks settings that have a fixed set of values.
func (c *Config) Validate() error {
	switch c.Database.Driver {
	case "sqlite":
		if strings.HasPrefix(c.Database.DSN, "postgres://") || strings.HasPrefix(c.Database.DSN, "postgresql://") {
			return errors.New("database.dsn is a PostgreSQL URL while database.driver is sqlite: set database.driver: postgres (SLUICE_DATABASE_DRIVER=postgres)")
		}
	case "postgres":
		if c.Database.DSN == "" {
			return errors.New("database.driver postgres needs database.dsn (--database-dsn, SLUICE_DATABASE_DSN): postgres://user:password@host:5432/db?sslmode=disable")
		}
	default:
		return fmt.Errorf("database.driver %q: use sqlite or postgres", c.Database.Driver)
	}
	if c.Storage.Redirect && (c.Storage.URL == "" || strings.HasPrefix(c.Storage.URL, "file:") || !strings.Contains(c.Storage.URL, "://")) {
		return errors.New("storage.redirect needs object storage (storage.url azblob://... or s3://...): a local directory cannot sign URLs")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: use debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format %q: use text or json", c.Log.Format)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("tls.cert and tls.key (--tls-cert, --tls-key) go together")
	}
	if c.Auth.TokenTTL < Duration(time.Minute) || c.Auth.RefreshTTL < c.Auth.TokenTTL {
		return errors.New("auth.tokenTTL must be at least 1m, and auth.refreshTTL at least auth.tokenTTL")
	}
	if c.Auth.FailedLoginBurst < 1 || c.Auth.FailedLoginRefill <= 0 {
		return errors.New("auth.failedLoginBurst must be at least 1 and auth.failedLoginRefill positive")
	}
	if c.AdminUser == "" {
		return errors.New("adminUser must not be empty")
	}
	if c.Streaming.Lease < Duration(2*time.Second) {
		return fmt.Errorf("streaming.lease %s: at least 2s", c.Streaming.Lease.Std())
	}
	if c.Streaming.Workers < 0 {
		return fmt.Errorf("streaming.workers %d: 0 or more", c.Streaming.Workers)
	}
	if c.Streaming.ConversionMemory < minConversionMemory {
		return fmt.Errorf("streaming.conversionMemory %d: at least %d (128 MiB)", c.Streaming.ConversionMemory, int64(minConversionMemory))
	}
	if c.Streaming.MemoryBudget != 0 && c.Streaming.MemoryBudget < c.Streaming.ConversionMemory {
		return fmt.Errorf("streaming.memoryBudget %d: 0 (workers × conversionMemory) or at least streaming.conversionMemory (%d)", c.Streaming.MemoryBudget, c.Streaming.ConversionMemory)
	}
	if err := c.Streaming.Limits.validate(); err != nil {
		return err
	}
	if c.DrainDelay < 0 {
		return errors.New("drainDelay must not be negative")
	}
	if c.SoftDelete.RetentionDays < 1 || c.SoftDelete.RetentionDays > 90 {
		return fmt.Errorf("softDelete.retentionDays %d: between 1 and 90", c.SoftDelete.RetentionDays)
	}
	if c.GC.GracePeriod < 0 || c.GC.Interval < 0 || c.GC.UploadTTL <= 0 {
		return errors.New("gc durations must not be negative, and gc.uploadTTL must be positive")
	}
	return nil
}

// ResolvePaths makes Data and the database file absolute, against the
// working directory, so that every path derived from them names the same
// place whoever reads it: in a URL, a relative directory would read as a
// host ("file://data/blobs" is host "data", path "/blobs").
func (c *Config) ResolvePaths() error {
	data, err := filepath.Abs(c.Data)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", c.Data, err)
	}
	c.Data = data
	if c.Database.Driver == "sqlite" && c.Database.DSN != "" {
		dsn, err := filepath.Abs(c.Database.DSN)
		if err != nil {
			return fmt.Errorf("database file %s: %w", c.Database.DSN, err)
		}
		c.Database.DSN = dsn
	}
	return nil
}

// BlobURL is the blob store's URL, defaulting to a directory in Data.
// Call ResolvePaths first: a relative Data gives a URL the blob store
// refuses.
func (c *Config) BlobURL() string {
	if c.Storage.URL != "" {
		return c.Storage.URL
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(c.Data, "blobs"))}
	return u.String()
}

// DatabaseFile is the SQLite file, defaulting to one in Data, when the
// driver is sqlite.
func (c *Config) DatabaseFile() string {
	if c.Database.DSN != "" {
		return c.Database.DSN
	}
	return filepath.Join(c.Data, "sluice.db")
}

// KeyDir is the directory of the token signing keys.
func (c *Config) KeyDir() string { return filepath.Join(c.Data, "keys") }

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// applyEnv sets every field whose variable is present and not empty,
// walking nested structs: SLUICE_X= is the same as leaving SLUICE_X unset,
// as shells and service managers make it easy to write.
func applyEnv(v reflect.Value, prefix string, env map[string]string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("yaml"), ",")[0]
		name := prefix + "_" + upperSnake(key)
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := applyEnv(fv, name, env); err != nil {
				return err
			}
			continue
		}
		val := env[name]
		if val == "" {
			continue
		}
		if err := setFromString(fv, val); err != nil {
			return fmt.Errorf("%s=%q: %w", name, val, err)
		}
	}
	return nil
}

func setFromString(fv reflect.Value, s string) error {
	if fv.Type() == reflect.TypeOf(Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		fv.SetInt(n)
	default:
		return fmt.Errorf("unsupported setting type %s", fv.Type())
	}
	return nil
}

// upperSnake turns gracePeriod into GRACE_PERIOD and uploadTTL into
// UPLOAD_TTL.
func upperSnake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) && (unicode.IsLower(r[i-1]) || (i+1 < len(r) && unicode.IsLower(r[i+1]))) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(c))
	}
	return b.String()
}

// Duration is a time.Duration written as "90s" or "24h" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
