package metadata

import (
	"errors"
	"fmt"
	"strings"
)

// ErrDenied is returned when a changeable attribute forbids an operation
// (a write-disabled repository, a delete-disabled tag...). The wrapping
// message names the attribute.
var ErrDenied = errors.New("operation disallowed by changeable attributes")

// ErrManifestDeleted is returned when pushing a manifest that is
// soft-deleted: it must be restored, not pushed again.
var ErrManifestDeleted = errors.New("manifest is soft-deleted")

// Attributes are the changeable attributes of a repository, manifest or tag.
type Attributes struct {
	DeleteEnabled bool
	WriteEnabled  bool
	ReadEnabled   bool
	ListEnabled   bool
}

// AttributesPatch changes the attributes that are not nil.
type AttributesPatch struct {
	DeleteEnabled *bool
	WriteEnabled  *bool
	ReadEnabled   *bool
	ListEnabled   *bool
}

// assignments returns the SQL SET clauses and arguments of a patch.
func (p AttributesPatch) assignments() ([]string, []any) {
	var sets []string
	var args []any
	for _, f := range []struct {
		col string
		v   *bool
	}{{"delete_enabled", p.DeleteEnabled}, {"write_enabled", p.WriteEnabled}, {"read_enabled", p.ReadEnabled}, {"list_enabled", p.ListEnabled}} {
		if f.v != nil {
			sets = append(sets, f.col+" = ?")
			args = append(args, boolInt(*f.v))
		}
	}
	return sets, args
}

const attributeColumns = "delete_enabled, write_enabled, read_enabled, list_enabled"

// attributeColumnsOf is attributeColumns qualified by a table alias.
func attributeColumnsOf(alias string) string {
	cols := strings.Split(attributeColumns, ", ")
	for i, c := range cols {
		cols[i] = alias + "." + c
	}
	return strings.Join(cols, ", ")
}

func (a *Attributes) scanDest() []any {
	return []any{&a.DeleteEnabled, &a.WriteEnabled, &a.ReadEnabled, &a.ListEnabled}
}

// denyUnless returns ErrDenied naming what is disabled unless every
// attribute the operation needs is enabled.
func denyUnless(what string, ok bool, attr string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("%w: %s has %s: false", ErrDenied, what, attr)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
