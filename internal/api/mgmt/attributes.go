package mgmt

import "github.com/sluicehq/sluice/internal/metadata"

// attributesJSON are the changeable attributes of a repository, manifest
// or tag on the wire.
type attributesJSON struct {
	DeleteEnabled bool `json:"deleteEnabled"`
	WriteEnabled  bool `json:"writeEnabled"`
	ReadEnabled   bool `json:"readEnabled"`
	ListEnabled   bool `json:"listEnabled"`
}

func toAttributesJSON(a metadata.Attributes) attributesJSON {
	return attributesJSON{DeleteEnabled: a.DeleteEnabled, WriteEnabled: a.WriteEnabled, ReadEnabled: a.ReadEnabled, ListEnabled: a.ListEnabled}
}

// attributesPatchJSON changes the attributes a body names.
type attributesPatchJSON struct {
	DeleteEnabled *bool `json:"deleteEnabled,omitempty"`
	WriteEnabled  *bool `json:"writeEnabled,omitempty"`
	ReadEnabled   *bool `json:"readEnabled,omitempty"`
	ListEnabled   *bool `json:"listEnabled,omitempty"`
}

// patch is the change, with what over names overriding (the same
// attributes given at the top level and under changeableAttributes).
func (p attributesPatchJSON) patch(over *attributesPatchJSON) metadata.AttributesPatch {
	out := metadata.AttributesPatch{DeleteEnabled: p.DeleteEnabled, WriteEnabled: p.WriteEnabled, ReadEnabled: p.ReadEnabled, ListEnabled: p.ListEnabled}
	if over == nil {
		return out
	}
	for _, f := range []struct {
		dst **bool
		src *bool
	}{
		{&out.DeleteEnabled, over.DeleteEnabled}, {&out.WriteEnabled, over.WriteEnabled},
		{&out.ReadEnabled, over.ReadEnabled}, {&out.ListEnabled, over.ListEnabled},
	} {
		if f.src != nil {
			*f.dst = f.src
		}
	}
	return out
}
