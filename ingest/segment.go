package ingest

// segmentRoutes are the Segment-spec /v1 routes for CDPs.
func (s *Server) segmentRoutes() map[string]*route {
	return nil
}
