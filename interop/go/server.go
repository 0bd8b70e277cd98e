// A grpc-go backend for the interop suite: interop.v1.Interop's Unary, ClientStream and
// Bidi, on raw bytes (no generated code: Debian's golang-google-grpc-dev is all it needs).
// It prints "LISTENING <port>" once it serves and exits when its standard input closes.
//
// grpc-go servers see the end of a request stream only on a DATA frame: a request that
// ends on its HEADERS never reaches io.EOF, which is what this backend exists to check.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"google.golang.org/grpc"
)

// rawCodec passes messages through as bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return nil, errors.New("rawCodec: not *[]byte")
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b, ok := v.(*[]byte)
	if !ok {
		return errors.New("rawCodec: not *[]byte")
	}
	*b = append([]byte(nil), data...)
	return nil
}

func (rawCodec) String() string { return "proto" }

// payload reads field 1 (bytes) of an interop.v1.Request.
func payload(message []byte) ([]byte, error) {
	var out []byte
	for len(message) > 0 {
		key, n := varint(message)
		if n == 0 {
			return nil, errors.New("bad field key")
		}
		message = message[n:]
		switch key & 7 {
		case 0:
			_, n = varint(message)
			if n == 0 {
				return nil, errors.New("bad varint")
			}
			message = message[n:]
		case 2:
			size, n := varint(message)
			if n == 0 || uint64(len(message)-n) < size {
				return nil, errors.New("bad length")
			}
			if key>>3 == 1 {
				out = append(out, message[n:n+int(size)]...)
			}
			message = message[n+int(size):]
		default:
			return nil, fmt.Errorf("wire type %d", key&7)
		}
	}
	return out, nil
}

func varint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

func putVarint(out []byte, v uint64) []byte {
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}

// response encodes an interop.v1.Response{payload, request_count}.
func response(body []byte, count uint32) []byte {
	var out []byte
	if len(body) > 0 {
		out = append(out, 0x0a)
		out = putVarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	if count > 0 {
		out = append(out, 0x10)
		out = putVarint(out, uint64(count))
	}
	return out
}

func unary(_ interface{}, stream grpc.ServerStream) error {
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	body, err := payload(request)
	if err != nil {
		return err
	}
	answer := response(body, 1)
	return stream.SendMsg(&answer)
}

func clientStream(_ interface{}, stream grpc.ServerStream) error {
	var all []byte
	var count uint32
	for {
		var request []byte
		err := stream.RecvMsg(&request)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		body, err := payload(request)
		if err != nil {
			return err
		}
		all = append(all, body...)
		count++
	}
	answer := response(all, count)
	return stream.SendMsg(&answer)
}

func bidi(_ interface{}, stream grpc.ServerStream) error {
	var count uint32
	for {
		var request []byte
		err := stream.RecvMsg(&request)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		body, err := payload(request)
		if err != nil {
			return err
		}
		count++
		answer := response(body, count)
		if err := stream.SendMsg(&answer); err != nil {
			return err
		}
	}
}

var service = grpc.ServiceDesc{
	ServiceName: "interop.v1.Interop",
	HandlerType: (*interface{})(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Unary", Handler: unary},
		{StreamName: "ClientStream", Handler: clientStream, ClientStreams: true},
		{StreamName: "Bidi", Handler: bidi, ClientStreams: true, ServerStreams: true},
	},
}

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.CustomCodec(rawCodec{}))
	var impl interface{}
	server.RegisterService(&service, &impl)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Printf("LISTENING %d\n", listener.Addr().(*net.TCPAddr).Port)
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
