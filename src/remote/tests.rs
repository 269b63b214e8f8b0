use super::rest;
use super::*;

#[test]
fn endpoints_parse_with_defaults_and_reject_unknown_schemes() {
    let e = Endpoint::parse("grpc://127.0.0.1:9000").unwrap();
    assert_eq!(
        (e.transport, e.tls, e.base.as_str()),
        (Transport::Grpc, false, "http://127.0.0.1:9000")
    );
    let e = Endpoint::parse("grpcs://infer.example").unwrap();
    assert_eq!(
        (e.transport, e.tls, e.base.as_str()),
        (Transport::Grpc, true, "https://infer.example:8001")
    );
    let e = Endpoint::parse(" https://h/prefix/ ").unwrap();
    assert_eq!(
        (e.transport, e.tls, e.base.as_str()),
        (Transport::Rest, true, "https://h:443/prefix")
    );
    assert!(Endpoint::parse("ftp://h").unwrap_err().contains("scheme"));
    assert!(
        Endpoint::parse("grpc://h:1/x")
            .unwrap_err()
            .contains("no path")
    );
    assert!(Endpoint::parse("nonsense").is_err());
    let list = Endpoint::parse_list("http://a:1, grpc://b:2,,").unwrap();
    assert_eq!(list.len(), 2);
}

#[test]
fn raw_tensors_decode_by_datatype_and_check_their_size() {
    let raw: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let t = Tensor::from_raw("x".into(), "FP32".into(), vec![2], &raw).unwrap();
    assert_eq!(t.data, Data::Float(vec![1.5, -2.0]));
    let t = Tensor::from_raw("x".into(), "INT16".into(), vec![1, 2], &[0xff, 0xff, 2, 0]).unwrap();
    assert_eq!(t.data, Data::Int(vec![-1, 2]));
    let t = Tensor::from_raw("x".into(), "FP16".into(), vec![1], &0x3c00u16.to_le_bytes()).unwrap();
    assert_eq!(t.data, Data::Float(vec![1.0]));
    let bytes = [
        2u32.to_le_bytes().as_slice(),
        b"hi",
        0u32.to_le_bytes().as_slice(),
    ]
    .concat();
    let t = Tensor::from_raw("s".into(), "BYTES".into(), vec![2], &bytes).unwrap();
    assert_eq!(t.data, Data::Bytes(vec![b"hi".to_vec(), vec![]]));
    let err = Tensor::from_raw("x".into(), "FP32".into(), vec![3], &raw).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadResponse);
    assert!(Tensor::from_raw("x".into(), "WHAT".into(), vec![1], &[0]).is_err());
    assert!(Tensor::from_raw("x".into(), "UINT8".into(), vec![-1], &[0]).is_err());
    // Encoding round-trips.
    let t = Tensor {
        name: "x".into(),
        datatype: "INT32".into(),
        shape: vec![2],
        data: Data::Int(vec![-5, 7]),
    };
    let back = Tensor::from_raw("x".into(), "INT32".into(), vec![2], &t.raw()).unwrap();
    assert_eq!(back.data, t.data);
}

#[test]
fn json_responses_decode_nested_data_and_refuse_garbage() {
    let body = br#"{"id":"7","model_name":"m","outputs":[
        {"name":"mean","datatype":"FP64","shape":[1],"data":[12.5]},
        {"name":"boxes","datatype":"FP32","shape":[1,4],"data":[[1,2,3,4]]},
        {"name":"classes","datatype":"BYTES","shape":[1],"data":["ball"]}]}"#;
    let r = rest::decode_response(body, None).unwrap();
    assert_eq!(r.id, "7");
    assert_eq!(r.outputs[0].data, Data::Float(vec![12.5]));
    assert_eq!(r.outputs[1].data, Data::Float(vec![1.0, 2.0, 3.0, 4.0]));
    assert_eq!(r.outputs[2].data, Data::Bytes(vec![b"ball".to_vec()]));
    for garbage in [
        &b"not json"[..],
        br#"{"id":"1"}"#,
        br#"{"id":"1","outputs":[{"name":"a","datatype":"FP32","shape":[2],"data":[1]}]}"#,
        br#"{"id":"1","outputs":[{"name":"a","datatype":"INT32","shape":[1],"data":["x"]}]}"#,
        br#"{"id":5,"outputs":[]}"#,
    ] {
        let err = rest::decode_response(garbage, None).unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::BadResponse,
            "{}",
            String::from_utf8_lossy(garbage)
        );
    }
}

#[test]
fn binary_extension_round_trips() {
    let request = Request {
        id: "3".into(),
        inputs: vec![Tensor {
            name: "frame".into(),
            datatype: "UINT8".into(),
            shape: vec![1, 2, 3],
            data: Data::U8(vec![1, 2, 3, 4, 5, 6].into()),
        }],
    };
    let (header, body) = rest::encode_binary(&request);
    let json: serde_json::Value = serde_json::from_slice(&body[..header]).unwrap();
    assert_eq!(json["inputs"][0]["parameters"]["binary_data_size"], 6);
    assert_eq!(&body[header..], &[1, 2, 3, 4, 5, 6]);
    // A response in the same layout.
    let out = br#"{"id":"3","outputs":[{"name":"sum","datatype":"UINT32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
    let mut response = out.to_vec();
    response.extend_from_slice(&21u32.to_le_bytes());
    let r = rest::decode_response(&response, Some(out.len())).unwrap();
    assert_eq!(r.outputs[0].data, Data::UInt(vec![21]));
    assert!(rest::decode_response(&response[..response.len() - 1], Some(out.len())).is_err());
    let json: serde_json::Value = serde_json::from_slice(&rest::encode_json(&request)).unwrap();
    assert_eq!(
        json["inputs"][0]["data"],
        serde_json::json!([1, 2, 3, 4, 5, 6])
    );
    assert_eq!(json["id"], "3");
    // The hand-written JSON of frames: every byte value, and an id that needs escaping.
    let every_byte = Request {
        id: "a\"b".into(),
        inputs: vec![Tensor {
            name: "f".into(),
            datatype: "UINT8".into(),
            shape: vec![256],
            data: Data::U8((0..=255u8).collect::<Vec<_>>().into()),
        }],
    };
    let json: serde_json::Value = serde_json::from_slice(&rest::encode_json(&every_byte)).unwrap();
    assert_eq!(json["id"], "a\"b");
    assert_eq!(
        json["inputs"][0]["data"],
        serde_json::Value::from((0..=255u8).collect::<Vec<_>>())
    );
}

#[test]
fn frames_are_shared_not_copied_into_requests() {
    let image = Image {
        id: "4".into(),
        height: 2,
        width: 2,
        channels: 1,
        pixels: vec![9, 8, 7, 6],
    };
    let at = image.pixels.as_ptr();
    let request = request_for(image, &ModelInfo::default()).unwrap();
    let tensor = &request.inputs[0];
    // The image's buffer becomes the tensor's, and the gRPC message shares it too.
    assert_eq!(tensor.raw().as_ptr(), at);
    assert_eq!(tensor.raw_shared().as_ptr(), at);
    assert_eq!(&tensor.raw_shared()[..], &[9, 8, 7, 6]);
}

#[test]
fn grpc_responses_decode_raw_and_typed_contents() {
    use super::proto::*;
    let response = ModelInferResponse {
        id: "9".into(),
        outputs: vec![
            InferOutputTensor {
                name: "a".into(),
                datatype: "INT64".into(),
                shape: vec![2],
                contents: None,
            },
            InferOutputTensor {
                name: "b".into(),
                datatype: "FP32".into(),
                shape: vec![1],
                contents: None,
            },
        ],
        raw_output_contents: vec![
            [3i64.to_le_bytes(), (-4i64).to_le_bytes()].concat(),
            0.5f32.to_le_bytes().to_vec(),
        ],
        ..Default::default()
    };
    let r = super::grpc::decode_response(response).unwrap();
    assert_eq!(r.outputs[0].data, Data::Int(vec![3, -4]));
    assert_eq!(r.outputs[1].data, Data::Float(vec![0.5]));
    let typed = ModelInferResponse {
        id: "9".into(),
        outputs: vec![InferOutputTensor {
            name: "c".into(),
            datatype: "UINT8".into(),
            shape: vec![2],
            contents: Some(InferTensorContents {
                uint_contents: vec![1, 2],
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    assert_eq!(
        super::grpc::decode_response(typed).unwrap().outputs[0].data,
        Data::UInt(vec![1, 2])
    );
    let short = ModelInferResponse {
        outputs: vec![InferOutputTensor {
            name: "c".into(),
            datatype: "FP64".into(),
            shape: vec![2],
            contents: None,
        }],
        ..Default::default()
    };
    assert_eq!(
        super::grpc::decode_response(short).unwrap_err().kind,
        ErrorKind::BadResponse
    );
}

#[test]
fn requests_take_the_shape_the_model_asks_for() {
    let image = Image {
        id: "1".into(),
        height: 2,
        width: 3,
        channels: 4,
        pixels: vec![0; 24],
    };
    let info = |shape: Vec<i64>| ModelInfo {
        inputs: vec![TensorInfo {
            name: "pixels".into(),
            datatype: "UINT8".into(),
            shape,
        }],
        outputs: vec![],
    };
    let shape =
        |info: &ModelInfo| request_for(image.clone(), info).map(|r| r.inputs[0].shape.clone());
    assert_eq!(shape(&ModelInfo::default()).unwrap(), vec![2, 3, 4]);
    assert_eq!(shape(&info(vec![-1, -1, -1])).unwrap(), vec![2, 3, 4]);
    assert_eq!(shape(&info(vec![-1, -1, -1, 4])).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(shape(&info(vec![-1])).unwrap(), vec![24]);
    assert_eq!(shape(&info(vec![2, 12])).unwrap(), vec![2, 12]);
    assert_eq!(
        shape(&info(vec![-1, -1, 3])).unwrap_err().kind,
        ErrorKind::Rejected
    );
    let request = request_for(image.clone(), &info(vec![-1, -1, -1])).unwrap();
    assert_eq!(
        (request.inputs[0].name.as_str(), request.id.as_str()),
        ("pixels", "1")
    );
    let wrong = Response {
        id: "2".into(),
        outputs: vec![],
    };
    assert_eq!(
        check_id(&request, &wrong).unwrap_err().kind,
        ErrorKind::BadResponse
    );
}

#[test]
fn a_set_with_every_server_down_reports_no_server_quickly() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let set = ServerSet::start(Config {
        servers: Endpoint::parse_list(&format!("http://127.0.0.1:{port},grpc://127.0.0.1:{port}"))
            .unwrap(),
        model: "m".into(),
        model_version: String::new(),
        request_timeout: Duration::from_secs(2),
        hedge_after: None,
        max_in_flight: 0,
        auth_token: Some("secret-token".into()),
        max_response_bytes: 1 << 20,
        extra_roots_pem: None,
        batch_size: 1,
        batch_timeout: Duration::from_millis(5),
    })
    .unwrap();
    let image = Image {
        id: "0".into(),
        height: 1,
        width: 1,
        channels: 1,
        pixels: vec![0],
    };
    let mut avoid = Vec::new();
    // Waits for the first probes, then fails without waiting out the timeout.
    let err = set.infer(image, &mut avoid).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NoServer);
    let figures = set.figures();
    assert!(
        figures
            .iter()
            .all(|f| !f.healthy && !f.last_error.is_empty())
    );
    assert!(
        figures
            .iter()
            .all(|f| !f.last_error.contains("secret-token"))
    );
    assert!(!format!("{:?}", set.inner_config_for_tests()).contains("secret-token"));
}

#[test]
fn bad_configuration_is_refused_at_start() {
    let config = |servers: &str, model: &str| Config {
        servers: Endpoint::parse_list(servers).unwrap(),
        model: model.into(),
        model_version: String::new(),
        request_timeout: Duration::from_secs(1),
        hedge_after: None,
        max_in_flight: 0,
        auth_token: None,
        max_response_bytes: 1 << 20,
        extra_roots_pem: Some(b"not a certificate".to_vec()),
        batch_size: 1,
        batch_timeout: Duration::from_millis(5),
    };
    assert!(
        ServerSet::start(config("", "m"))
            .unwrap_err()
            .contains("no server")
    );
    assert!(
        ServerSet::start(config("http://h:1", ""))
            .unwrap_err()
            .contains("model")
    );
    assert!(
        ServerSet::start(config("https://h:1", "m"))
            .unwrap_err()
            .contains("PEM")
    );
}

#[test]
fn the_probe_backoff_doubles_from_100_ms_to_5_s() {
    use super::set::probe_backoff;
    let ms = |n| Some(Duration::from_millis(n));
    // A server never taken out is probed at once (the first probe at start).
    assert_eq!(probe_backoff(0, 0), None);
    // Failed probes: 100 ms, then doubling, capped at 5 s.
    let schedule: Vec<_> = (1..=8).map(|failures| probe_backoff(0, failures)).collect();
    assert_eq!(
        schedule,
        vec![
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(3200),
            ms(5000),
            ms(5000)
        ]
    );
    // Each time requests take the server out again, it starts further along.
    assert_eq!(probe_backoff(1, 0), ms(100));
    assert_eq!(probe_backoff(3, 0), ms(400));
    assert_eq!(probe_backoff(3, 1), ms(800));
    // No overflow however long it stays down.
    assert_eq!(probe_backoff(u32::MAX, u32::MAX), ms(5000));
}
